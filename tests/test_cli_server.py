"""The command line of server moves and of the standalone relay test: exit status 0/2/1, the
field named, nothing started on bad input, the transcript printed like swaks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from mailmove.sandbox.smtp import RelayHandler, SmtpServer
from mailmove.sandbox.world import RELAYS
from mailmove.service import control
from tests.support.moves import started_since, terminate_running, until_stage
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.server_move import GOOD, NEW, RELAY_ARGS, replaced, without
from workflows.server_move import ServerMoveWorkflow

# the stage names, written out: outside tools rely on them (`--json`, `mailmove confirm ID STAGE`)
STAGES = [
    "preflight",
    "request_tsl",
    "await_tsl",
    "open_firewall",
    "relay_test",
    "configure_mta",
    "await_cutover",
    "remove_old_tsl",
    "done",
]


@pytest.mark.parametrize(
    "args,field",
    [
        (replaced("--new", "mx 2.chem.sandbox.test"), "new:"),
        (replaced("--old", "-bad.sandbox.test"), "old:"),
        (replaced("--new-ipv4", "127.0.0.300"), "new_ipv4:"),
        (replaced("--new-ipv4", "2001:db8::25"), "new_ipv4:"),
        (GOOD + ["--new-ipv6", "127.0.0.2"], "new_ipv6:"),
        (without("--institution"), "institution:"),
        (without("--admin") + ["--admin", "ab12cdef"], "admin:"),
        (without("--admin") + ["--admin", "ab12cdef", "--admin", "ab12cdef"], "admin:"),
        (replaced("--contact", "postmaster at chem"), "contact:"),
        (without("--sender-domain"), "sender_domain:"),
        (GOOD + ["--sender-domain", "chem..sandbox.test"], "sender_domain:"),
        (GOOD + ["--mail-from", "nobody"], "mail_from:"),
        (GOOD + ["--rcpt", "@example.org"], "rcpt:"),
        (GOOD + ["--relay-scope", "outer"], "--relay-scope"),
        (GOOD + ["--configure-mta"], "configure_mta:"),  # GOOD has --no-agent: nobody to change Postfix
    ],
)
async def test_bad_input_exits_2_names_the_field_and_starts_nothing(cli_world, dev_env, args, field):
    world, settings, config = cli_world
    code, out, err = await mailmove(config, "server", "start", *args)
    assert code == 2, (out, err)
    assert field in err
    assert not await started_since(dev_env.client, f"server-move:{NEW}", world.started_at)


async def test_start_show_by_bare_name_confirm_and_cancel(cli_world, dev_env):
    world, settings, config = cli_world
    code, out, err = await mailmove(config, "server", "start", *GOOD, "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == f"server-move:{NEW}"
    code, out, err = await mailmove(config, "server", "start", *GOOD)
    assert code == 2 and "already moving" in err

    handle = dev_env.client.get_workflow_handle_for(ServerMoveWorkflow.run, f"server-move:{NEW}")
    await until_stage(handle, "request_tsl", "waiting")
    code, out, err = await mailmove(config, "show", NEW, "--json")  # the bare host name
    assert code == 0, err
    status = json.loads(out)["status"]
    assert [s["name"] for s in status["stages"]] == STAGES
    assert status["kind"] == "server" and status["form"]["fqdn"] == NEW and status["form"]["ipv4"] == "127.0.0.2"
    assert status["form"]["admins"] == "ab12cdef, xy34ghij" and status["form"]["form"].endswith("antrag-tsl.php")
    assert status["firewall"]["nftables"].startswith(f"# tcp/25 for {NEW}")
    assert "ip saddr { 130.83.156.224/27, 130.83.252.128/26 } tcp dport 25 accept" in status["firewall"]["nftables"]
    assert status["postfix"][0].startswith(f"relayhost = [{RELAYS['external']}]")
    assert sorted(status["other_mtas"]) == ["Exim", "OpenSMTPD", "Sendmail"]
    assert f"define(`SMART_HOST', `[{RELAYS['external']}]')dnl" in status["other_mtas"]["Sendmail"]

    code, out, err = await mailmove(config, "show", NEW)
    assert code == 0 and "antrag-tsl.php" in out and "relayhost" in out
    assert "OpenSMTPD instead:" in out and f'action "gateway" relay host smtp+tls://{RELAYS["external"]}:' in out

    code, out, err = await mailmove(config, "confirm", NEW, "request_tsl", "--note", "filed, ticket 7")
    assert code == 0, err
    await until_stage(handle, "await_tsl", "waiting")
    code, out, err = await mailmove(config, "confirm", NEW, "await_tsl")
    assert code == 0, err
    status = await until_stage(handle, "open_firewall", "waiting")  # no agent: a task for a person
    assert "open tcp/25" in status.stages[3].waiting_for
    code, out, err = await mailmove(config, "show", NEW)
    assert "Firewall rules to apply" in out and "130.83.156.224/27" in out

    code, out, err = await mailmove(config, "cancel", NEW, "--note", "wrong box")
    assert code == 0 and "cancelling: withdraw the TrustedServerList entry" in out
    status = await until_stage(handle, "open_firewall", "failed")
    # manual mode: the withdrawal is a form to file, then a confirm
    assert status.form["request"] == "remove entry" and status.stages[1].state.value == "waiting"
    code, out, err = await mailmove(config, "confirm", NEW, "request_tsl", "--note", "withdrawn")
    assert code == 0, err
    assert (await handle.result()).state.value == "cancelled"


@pytest.fixture
def relays(cli_world):
    world = cli_world[0]
    started = []

    def start(handler: RelayHandler) -> SmtpServer:
        started.append(SmtpServer(handler, world.ca, [RELAYS["external"]]).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


async def test_relay_test_prints_the_dialogue_and_exits_0_when_it_passes(cli_world, relays):
    world, settings, config = cli_world
    relay = relays(RelayHandler())
    args = ["relay-test", "--relay", f"{RELAYS['external']}:{relay.port}", *RELAY_ARGS, "--source", "127.0.0.2"]
    code, out, err = await mailmove(config, *args, "--ca", str(world.ca_file), "--send")
    assert code == 0, (out, err)
    assert f"=== Trying {RELAYS['external']}:{relay.port} from 127.0.0.2" in out
    assert "<-  220 " in out and f" -> EHLO {NEW}" in out and " -> STARTTLS" in out
    assert " ~> MAIL FROM:<postmaster@chem.sandbox.test>" in out and "<~  250 2.0.0 Ok: queued as" in out
    assert "certificate SHA-256" in out and "verdict: passed" in out and "FAILED" not in out
    code, out, err = await mailmove(config, *args, "--json")
    transcript = json.loads(out)
    assert code == 0 and transcript["verdict"] == "passed" and transcript["tls"]["version"].startswith("TLSv1.")


async def test_relay_test_exits_1_naming_the_failed_step(cli_world, relays):
    world, settings, config = cli_world
    relay = relays(RelayHandler(permits=lambda peer, helo: False))
    code, out, err = await mailmove(config, "relay-test", "--relay", f"{RELAYS['external']}:{relay.port}", *RELAY_ARGS)
    assert code == 1
    assert "<~  554 5.7.1" in out and "relay_denied" in out and "FAILED" in out


@pytest.mark.parametrize(
    "change,field",
    [
        (["--rcpt", "not-an-address"], "rcpt:"),
        (["--helo", "bad_name.example"], "helo:"),
        (["--source", "mx2"], "source:"),
        (["--ca", "/nonexistent/ca.pem"], "ca:"),
        (["--relay", "mailout.example:99999"], "relay:"),
    ],
)
async def test_relay_test_bad_input_exits_2(cli_world, change, field):
    world, settings, config = cli_world
    args = ["--relay", RELAYS["external"], *RELAY_ARGS]
    option = change[0]
    if option in args:
        at = args.index(option)
        args[at + 1] = change[1]
    else:
        args += change
    code, out, err = await mailmove(config, "relay-test", *args)
    assert code == 2 and field in err, (out, err)


async def test_start_warns_until_a_host_agent_polls(cli_world, dev_env):
    """`server start` says when no agent serves the new server yet; `mailmove worker --host` is one."""
    world, settings, config = cli_world
    args = [a for a in GOOD if a != "--no-agent"]
    code, out, err = await mailmove(config, "server", "start", *args)
    assert code == 0, err
    try:  # a failure on the way strands no move on the shared dev server
        assert f"no host agent polls {settings.temporal.task_queue}-host-{NEW}" in out
        assert f"mailmove worker --host {NEW}" in out
        agent = subprocess.Popen(
            [sys.executable, "-m", "mailmove.cli", "--config", str(config), "worker", "--host", NEW.upper()],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def polled() -> bool:
                return await control.agent_polls(dev_env.client, settings, f"{settings.temporal.task_queue}-host-{NEW}")

            await wait_for(polled, timeout=30, what="the host agent to poll its queue")
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        code, out, err = await mailmove(config, "cancel", NEW)
        assert code == 0, err
    finally:
        await terminate_running(dev_env.client, f"server-move:{NEW}")
