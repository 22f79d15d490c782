"""The command line contract: exit status 0/2/1, a message naming the field, nothing started on
bad input, `--json` on every read command, a second move of a moving domain refused."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowExecutionStatus

from mailmove.base import search
from mailmove.store.db import sessions
from mailmove.store.records import list_migrations
from tests.support.domain_move import DOMAIN
from tests.support.moves import started_since, until_stage
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow


async def nothing_started(dev_env, settings, since, domain: str = DOMAIN) -> bool:
    with sessions(settings.database.url)() as session:
        if list_migrations(session):
            return False
    return not await started_since(dev_env.client, f"domain-move:{domain}", since)


LEGACY = f"mail.{DOMAIN}"
# the stage names, written out: outside tools rely on them (`--json`, `mailmove confirm ID STAGE`)
STAGES = [
    "preflight",
    "add_gateway_mx",
    "request_domain",
    "await_registration",
    "remove_legacy_mx",
    "await_propagation",
    "done",
]


@pytest.mark.parametrize(
    "args,field",
    [
        (["foo bar.sandbox.test", "--legacy-mx", LEGACY], "domain:"),
        (["☃.sandbox.test", "--legacy-mx", LEGACY], "domain:"),
        ([("a" * 64) + ".sandbox.test", "--legacy-mx", LEGACY], "domain:"),
        ([DOMAIN, "--legacy-mx", "a2681.mx.gw.sandbox.test"], "legacy_mx:"),
        ([DOMAIN, "--legacy-mx", "mail_server.sandbox.test"], "legacy_mx:"),
        ([DOMAIN, "--legacy-mx", LEGACY, "--legacy-preference", "10"], "legacy_preference:"),
        ([DOMAIN, "--legacy-mx", LEGACY, "--legacy-preference", "20"], "legacy_preference:"),
    ],
)
async def test_bad_input_exits_2_names_the_field_and_starts_nothing(cli_world, dev_env, args, field):
    world, settings, config = cli_world
    code, out, err = await mailmove(config, "domain", "start", *args)
    assert code == 2, (out, err)
    assert field in err
    assert await nothing_started(dev_env, settings, world.started_at)


async def test_config_problems_exit_2_naming_the_key(cli_world, dev_env):
    world, settings, config = cli_world
    text = config.read_text()
    cases = [
        (text.replace('tsig_key = "ddns-key"', 'tsig_key = "no-such-key"'), 'dns.zones."chem.sandbox.test".tsig_key'),
        (
            text.replace(f'tsig_keyfile = "{world.dns.keyfile}"', 'tsig_keyfile = "/nonexistent/keys.conf"'),
            "dns.tsig_keyfile",
        ),
        (
            text.replace(f'update_server = "{world.dns.primary.address}"', 'update_server = "127.0.0.1:9"'),
            'dns.zones."chem.sandbox.test".update_server',
        ),
        (text.replace(f'resolvers = ["{world.dns.resolver.address}"]', 'resolvers = ["127.0.0.1:9"]'), "dns.resolvers"),
        (text.replace("[gateway]\n", "[gateway]\nmx_preferense = 3\n"), "gateway.mx_preferense"),
        (
            text.replace("[temporal]\n", '[temporal]\ntls_cert_file = "/nonexistent/client.pem"\n'),
            "temporal.tls_key_file",
        ),
    ]
    for i, (changed, key) in enumerate(cases):
        bad = config.with_name(f"bad{i}.toml")
        bad.write_text(changed)
        code, out, err = await mailmove(bad, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
        assert code == 2 and key in err, (key, err)
    # a Temporal that does not answer is the environment, not the configuration: exit 1, one line
    unreachable = config.with_name("unreachable.toml")
    unreachable.write_text(text.replace(settings.temporal.address, "127.0.0.1:9"))
    code, out, err = await mailmove(unreachable, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
    assert code == 1 and "temporal.address: 127.0.0.1:9 does not answer" in err and "Traceback" not in err, err
    assert await nothing_started(dev_env, settings, world.started_at)


async def test_start_list_show_confirm_cancel(cli_world, dev_env):
    world, settings, config = cli_world
    code, out, err = await mailmove(config, "domain", "start", DOMAIN.upper(), "--legacy-mx", LEGACY, "--json")
    assert code == 0, err
    assert json.loads(out) == {"id": f"domain-move:{DOMAIN}", "state": "running"}

    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
    assert code == 2 and "already moving" in err

    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    await until_stage(handle, "request_domain", "waiting")

    async def waiting():
        described = await handle.describe()
        return described if described.typed_search_attributes.get(search.STATE) == "waiting" else None

    described = await wait_for(waiting, what="MigrationState = waiting")
    found = described.typed_search_attributes
    assert (found.get(search.KIND), found.get(search.SUBJECT), found.get(search.STAGE)) == ("domain", DOMAIN, None)

    async def listed():
        # earlier tests' moves of this domain are closed; a terminated one keeps its last state
        query = f"MigrationState = 'waiting' AND MigrationDomain = '{DOMAIN}' AND ExecutionStatus = 'Running'"
        return [(w.id, w.run_id) async for w in dev_env.client.list_workflows(query)]

    assert await wait_for(listed, what="the move listed by its state") == [(f"domain-move:{DOMAIN}", described.run_id)]

    code, out, err = await mailmove(config, "show", DOMAIN, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["execution"] == "RUNNING"
    status = shown["status"]
    assert status["stage"] == "request_domain" and status["state"] == "waiting"
    assert [s["name"] for s in status["stages"]] == STAGES
    assert {"state", "started", "ended", "attempts", "last_error", "waiting_for", "eta"} <= set(status["stages"][0])
    assert status["form"]["form"].endswith("antrag-maildomain.php")

    code, out, err = await mailmove(config, "show", f"domain-move:{DOMAIN}")
    assert code == 0 and "request_domain" in out and "antrag-maildomain.php" in out

    code, out, err = await mailmove(config, "list", "--json")
    [row] = json.loads(out)
    assert code == 0 and (row["id"], row["stage"], row["state"]) == (
        f"domain-move:{DOMAIN}",
        "request_domain",
        "waiting",
    )

    code, out, err = await mailmove(config, "confirm", DOMAIN, "await_registration")
    assert code == 2 and "not waiting" in err
    code, out, err = await mailmove(config, "confirm", "other.sandbox.test", "request_domain")
    assert code == 2 and "no running migration" in err
    code, out, err = await mailmove(config, "confirm", DOMAIN, "request_domain", "--note", "filed by hand")
    assert code == 0, err
    await until_stage(handle, "await_registration", "waiting")

    code, out, err = await mailmove(config, "extend", DOMAIN, "2d", "--note", "holidays")
    assert code == 0 and "escalates at" in out
    code, out, err = await mailmove(config, "cancel", DOMAIN, "--note", "wrong domain")
    assert code == 0 and "restored" in out
    assert (await handle.result()).state.value == "cancelled"
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert described.typed_search_attributes.get(search.STATE) == "cancelled"

    code, out, err = await mailmove(config, "show", DOMAIN, "--json")
    audit = {a["action"]: a for a in json.loads(out)["audit"] if a["actor"] != "mailmove"}
    assert audit["confirm"]["result"] == "request_domain confirmed" and audit["confirm"]["detail"] == "filed by hand"
    assert audit["extend"]["result"].startswith("the wait now escalates at")
    assert audit["cancel"]["result"].startswith("cancelling: the MX set will be restored")


async def test_show_reports_the_retries_of_a_running_activity(dev_env, worker_for, sandbox_factory):
    """Activity retries write no history: attempts and the last error come from describe."""
    world = sandbox_factory(confirm_after=1)
    # 503s until the retry has been seen (a fixed count raced the CLI: on a loaded machine the
    # third attempt went through between two `show` runs, and the retry was never seen)
    world.registry.unavailable = 10**6
    settings = settings_for(world, dev_env, portal_mode="http")
    config = world.root / "mailmove.toml"
    await worker_for(dev_env.client, settings)
    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
    assert code == 0, err

    async def retried():
        code, out, err = await mailmove(config, "show", DOMAIN, "--json")
        stage = next(s for s in json.loads(out)["status"]["stages"] if s["name"] == "request_domain")
        return stage if stage["attempts"] >= 2 else None

    stage = await wait_for(retried, timeout=30, interval=0.5, what="a retried filing")
    assert "file_request" in stage["last_error"] and "503" in stage["last_error"]
    world.registry.unavailable = 0  # the portal is back: the next attempt files it
    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    assert (await handle.result()).state.value == "done"
    assert len(world.registry.requests) == 1


async def test_a_whole_move_with_the_store_on_postgresql(dev_env, worker_for, sandbox_factory, postgres_url):
    world = sandbox_factory(confirm_after=1)
    settings = settings_for(world, dev_env, portal_mode="http", database_url=postgres_url)
    config = world.root / "mailmove.toml"
    await worker_for(dev_env.client, settings)
    code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
    assert code == 0, err
    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    assert (await handle.result()).state.value == "done"
    code, out, err = await mailmove(config, "list", "--json")
    [row] = json.loads(out)
    assert (row["id"], row["stage"], row["state"]) == (f"domain-move:{DOMAIN}", "done", "done")
    code, out, err = await mailmove(config, "show", DOMAIN, "--json")
    audit = json.loads(out)["audit"]
    assert [a["stage"] for a in audit if a["action"] == "stage done"] == STAGES[:-1]
    assert audit[-1]["action"] == "done"
