"""The guard of a finished server move on the dev server, against the sandbox: BIND serving the
forward and reverse zones, mx2's own MTA with STARTTLS, the relay and SMTP sink stand-ins, and a
host agent (nftables in a namespace of the test's own). The move's done path schedules the guard;
a triggered run finds nothing, its relay test having gone through the host agent from mx2's
address. Then mx2's address record points elsewhere (an RFC 2136 UPDATE by the test), so its
reverse DNS is no longer forward-confirmed: the next run finds the drift, mails the contact once
(a run with the same drift mails nothing), and `mailmove guard show --json` and /metrics show it.
mx2's MTA is restarted with a certificate that expires within `check.certificate_days`: a drift
that changed, mailed again. With the address back and the certificate renewed, it clears."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from mailmove.base import ids
from mailmove.base.model import ConfirmInput, MoveState
from mailmove.base.vocabulary import Kind, Verdict
from mailmove.sandbox.smtp import RelayHandler, SmtpServer
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.records import check_reports
from tests.support.dashboard import signed_in
from tests.support.dns import replace_records, resolved
from tests.support.firewall import nft_in
from tests.support.guard import drift_mails, forget, row, trigger
from tests.support.moves import terminate_running, until_stage
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.server_move import NEW, request
from tests.support.settings import settings_for
from workflows.server_move import ServerMoveWorkflow

WID = ids.workflow_id(Kind.SERVER, NEW)
ZONE = "chem.sandbox.test"
ADDRESS = "127.0.0.2"  # mx2's, with the PTR that names it
FCRDNS = f"dns.fcrdns[{ADDRESS}]"
STARTTLS = f"smtp.starttls[{ADDRESS}]"
CONTACT = request().contact


async def test_a_server_drift_is_found_mailed_once_shown_and_cleared(
    dev_env, worker_for, agent_for, netns, sandbox_factory
):
    world = sandbox_factory(confirm_after=1)
    settings = settings_for(
        world, dev_env, portal_mode="http", notify=True, timing={"probe_interval": 1}, agent={"nft": nft_in(netns)}
    )
    config = world.root / "mailmove.toml"
    await forget(dev_env.client, ids.guard_id(WID))
    await worker_for(dev_env.client, settings)
    await agent_for(dev_env.client, settings, NEW)
    move = await control.prepare_server_move(settings, request())
    handle = dev_env.client.get_workflow_handle_for(
        ServerMoveWorkflow.run, await control.start_server_move(dev_env.client, settings, move)
    )
    schedule = dev_env.client.get_schedule_handle(ids.guard_id(WID))
    try:
        await until_stage(handle, "await_cutover", "waiting", timeout=90)
        await control.confirm(dev_env.client, handle.id, ConfirmInput("await_cutover", "bob", "switched"))
        assert (await handle.result()).state == MoveState.DONE
        described = await schedule.describe()  # made by the done path
        assert not described.schedule.state.paused and described.info.next_action_times
        assert (await asyncio.to_thread(row, settings, WID)).baseline == {}  # every check passed at `done`

        relay = world.relays["external"].handler
        tested = len(relay.seen)
        quiet = await trigger(dev_env.client, schedule)
        assert (quiet.subject, quiet.worst, quiet.drift, quiet.mailed, quiet.note) == (NEW, Verdict.OK, [], False, "")
        # its relay test went through the host agent, from mx2's own address, and stopped before DATA
        assert len(relay.seen) == tested + 1 and (relay.seen[-1].peer, relay.seen[-1].helo) == (ADDRESS, NEW)
        assert {c.id: c.verdict for c in (await asyncio.to_thread(guard_report, settings)).checks} == {
            FCRDNS: "ok", f"smtp.banner[{ADDRESS}]": "ok", STARTTLS: "ok", "relay.test": "ok",
        }  # fmt: skip

        # mx2's A record now names another address: its PTR is no longer forward-confirmed
        await set_address(settings, world, "127.0.0.9")
        found = await trigger(dev_env.client, schedule)
        assert (found.drift, found.mailed, found.note) == ([FCRDNS], True, "")
        assert len(relay.seen) == tested + 2  # the relay test ran again: it leaves from 127.0.0.2 regardless
        [mail] = drift_mails(world, WID)
        assert mail["To"] == CONTACT and f"{NEW}: 1 finding(s) since the move" in mail["Subject"]
        assert f"{NEW} does not resolve back to {ADDRESS}" in mail.get_content()
        assert f"fix: set `{NEW}. IN A {ADDRESS}` in the central DNS" in mail.get_content()

        shown = await guard_show(config)
        [finding] = shown["drift"]
        assert (finding["id"], finding["verdict"], finding["group"]) == (FCRDNS, Verdict.ERROR, "DNS")
        assert finding["fix"] == f"set `{NEW}. IN A {ADDRESS}` in the central DNS"
        assert f"{NEW}: 127.0.0.9" in finding["observed"]
        assert shown["paused"] is False and shown["next_run"] and shown["drift_since"]
        metrics = await metrics_of(settings, dev_env.client)
        assert 'mailmove_drift{check="dns.fcrdns",kind="server"} 1.0' in metrics
        assert 'mailmove_campus_domains{class="drifting"} 0.0' in metrics  # a server is no domain

        again = await trigger(dev_env.client, schedule)  # the same drift: no second mail
        assert (again.drift, again.mailed) == ([FCRDNS], False)
        await asyncio.sleep(0.5)
        assert len(drift_mails(world, WID)) == 1

        # the certificate is near its end as well: the drift changed, so it is mailed again
        await asyncio.to_thread(restart_mta, world, datetime.now(UTC) + timedelta(days=5))
        changed = await trigger(dev_env.client, schedule)
        assert (sorted(changed.drift), changed.mailed) == ([FCRDNS, STARTTLS], True)
        _, second = drift_mails(world, WID)
        assert f"{NEW}: 2 finding(s) since the move" in second["Subject"]
        assert "the certificate expires in 4 days" in second.get_content()
        assert f"fix: renew the certificate of {NEW} now (and reload the MTA)" in second.get_content()
        assert {d["id"]: d["verdict"] for d in (await guard_show(config))["drift"]} == {
            FCRDNS: Verdict.ERROR,
            STARTTLS: Verdict.WARNING,
        }
        assert 'mailmove_drift{check="smtp.starttls",kind="server"} 1.0' in await metrics_of(settings, dev_env.client)

        await set_address(settings, world, ADDRESS)  # fixed
        await asyncio.to_thread(restart_mta, world, datetime.now(UTC) + timedelta(days=365))
        cleared = await trigger(dev_env.client, schedule)
        assert (cleared.drift, cleared.mailed) == ([], False)
        guard = await asyncio.to_thread(row, settings, WID)
        assert (guard.drift, guard.fingerprint, guard.mailed, guard.drift_since) == ([], "", "", None)
        shown = await guard_show(config)
        assert shown["drift"] == [] and shown["drift_since"] is None
        assert "mailmove_drift{" not in await metrics_of(settings, dev_env.client)
        assert len(drift_mails(world, WID)) == 2
    finally:
        await terminate_running(dev_env.client, handle.id)
        await forget(dev_env.client, ids.guard_id(WID))


async def set_address(settings, world, address: str) -> None:
    """mx2's A record made `address` by an RFC 2136 UPDATE; once the resolver the checks ask says so
    (the zone's TTL is the sandbox's 3 s)."""
    await replace_records(settings, ZONE, f"{NEW}.", "A", 3, address)
    await wait_for(lambda: resolved(world.dns.resolver.port, NEW, "A") == [address], what=f"{NEW} A {address}")


def restart_mta(world, not_after: datetime) -> None:
    """mx2's MTA stopped and started again on its address and port, with a certificate of the
    sandbox's CA valid until `not_after`."""
    world.department.stop()
    port = world.department.port
    world.department = SmtpServer(RelayHandler(), world.ca, [NEW], host=ADDRESS, port=port, not_after=not_after)
    world.department.start()


def guard_report(settings):
    """The latest run's report, stored beside the move's others."""
    with sessions(settings.database.url)() as session:
        return dict(check_reports(session, WID))["guard"]


async def guard_show(config) -> dict:
    code, out, err = await mailmove(config, "guard", "show", WID, "--json")
    assert code == 0, err
    return json.loads(out)


async def metrics_of(settings, client) -> str:
    async with signed_in(settings, client, "viewer") as c:
        return (await c.get("/metrics")).text
