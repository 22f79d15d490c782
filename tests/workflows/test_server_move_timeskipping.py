"""ServerMoveWorkflow on the time-skipping server with the real activities: BIND for forward and
reverse DNS, the portal stand-in, the relay stand-ins, and a host agent applying nftables in a
network namespace of the test's own. Days of waiting pass in seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.worker import Replayer

from activities.firewall import covered
from mailmove.base.model import CancelInput, ConfirmInput, ExtendInput, MoveState, StageState
from mailmove.sandbox.world import Sandbox
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.records import check_reports
from tests.support.firewall import firewall_of, nft_in
from tests.support.moves import actions, reach, skip_to_end, status_of, terminate_running, until_quiet, until_stage
from tests.support.payloads import encrypting
from tests.support.server_move import NEW, OLD, filings, request
from tests.support.settings import settings_for
from workflows.server_move import ServerMoveWorkflow, firewall_plan

DAY = 86400


@pytest.fixture
async def start(time_env, worker_for, agent_for, netns):
    """Start a server move with a worker and a host agent; a move left running is terminated."""
    handles = []

    async def begin(world: Sandbox, portal_mode="http", req=None, **timing):
        timing = {"relay_retry_initial": 600, "relay_retry_max": 3600, "heartbeat_timeout": 10, **timing}
        settings = settings_for(world, time_env, portal_mode=portal_mode, timing=timing, agent={"nft": nft_in(netns)})
        await worker_for(time_env.client, settings)
        await agent_for(time_env.client, settings, NEW)
        move = await control.prepare_server_move(settings, req or request())
        wid = await control.start_server_move(time_env.client, settings, move)
        handles.append(time_env.client.get_workflow_handle_for(ServerMoveWorkflow.run, wid))
        return settings, move, handles[-1]

    yield begin
    await terminate_running(time_env.client, *(h.id for h in handles))


async def test_the_whole_move_through_the_portal_and_the_host_agent(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=1)
    settings, move, handle = await start(world, req=request(send=True), probe_interval=600)
    status = await reach(time_env, handle, "await_cutover")
    assert firewall_of(netns) == covered(firewall_plan(move))
    t = status.transcript
    assert t.passed and t.source == "127.0.0.2" and t.tls.version in ("TLSv1.2", "TLSv1.3")
    seen = world.relays["external"].handler.seen[-1]
    assert (seen.peer, seen.helo, seen.tls) == ("127.0.0.2", NEW, True)  # from the new server's own address
    assert status.postfix == [
        f"relayhost = [{move.relay.host}]:{move.relay.port}",
        "smtp_tls_security_level = encrypt",
        "smtp_tls_mandatory_protocols = >=TLSv1.2",
    ]

    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob", "old MTA stopped"))
    result = await handle.result()
    assert result.state == MoveState.DONE and f"{OLD} is off the TrustedServerList" in result.message
    # filed once each: the new entry, then the old one's removal
    assert filings(world) == [("tsl", NEW, "127.0.0.2"), ("tsl-removal", OLD, "127.0.0.1")]
    status = await status_of(handle)
    done, skipped = StageState.DONE, StageState.SKIPPED  # configure_mta not asked for: main.cf is the postmaster's
    assert [s.state for s in status.stages] == [done] * 5 + [skipped] + [done] * 3
    trail = actions(settings, handle.id)
    assert ("bob", "confirm", "await_cutover") in trail
    # the server's checks: at preflight (the agent's relay test not yet run), and at done
    assert "Final check: 1 notice" not in result.message and "Final check: every check passed." in result.message
    with sessions(settings.database.url)() as session:
        reports = dict(check_reports(session, handle.id))
    verdicts = {c.id: c.verdict for c in reports["done"].checks}
    assert verdicts == {
        "dns.fcrdns[127.0.0.2]": "ok", "smtp.banner[127.0.0.2]": "ok", "smtp.starttls[127.0.0.2]": "ok", "relay.test": "ok",
    }  # fmt: skip
    assert {c.id: c.verdict for c in reports["preflight"].checks}["relay.test"] == "not_tested"
    await Replayer(workflows=[ServerMoveWorkflow], data_converter=encrypting()).replay_workflow(
        await handle.fetch_history()
    )


async def test_the_relay_test_repeats_until_the_tsl_entry_works(time_env, start, sandbox_factory, netns):
    """Confirmed by hand before the centre has really listed the server: relaying is denied,
    tested again with backoff, and passes once the entry is active."""
    world = sandbox_factory(confirm_after=10**9)
    settings, move, handle = await start(world, relay_retry_initial=600, relay_retry_max=1800)
    await until_stage(handle, "await_tsl", "waiting")
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_tsl", "alice", "mail from the HRZ"))
    status = await until_stage(handle, "relay_test", "waiting")
    assert status.transcript.verdict == "relay_denied" and "TrustedServerList" in status.transcript.cause
    assert status.state == MoveState.WAITING and not status.attention
    await time_env.sleep(timedelta(hours=2))
    tried = next(s for s in (await status_of(handle)).stages if s.name == "relay_test").attempts
    assert 3 <= tried <= 6  # 600 s, then 1200 s, then every 1800 s

    world.registry.confirm_after = 0  # the centre activates the entry
    status = await reach(time_env, handle, "await_cutover", step=timedelta(minutes=30))
    relay = next(s for s in status.stages if s.name == "relay_test")
    assert status.transcript.passed and relay.state == StageState.DONE


async def test_a_relay_test_that_needs_a_person_and_the_stage_limit(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=10**9)
    settings, move, handle = await start(world, relay_retry_initial=3600, relay_test_limit=DAY)
    await until_stage(handle, "await_tsl", "waiting")
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_tsl", "alice"))
    await until_stage(handle, "relay_test", "waiting")
    await time_env.sleep(timedelta(days=1, hours=2))
    status = await status_of(handle)
    assert status.state == MoveState.NEEDS_ATTENTION and status.attention
    assert any(a.startswith("relay_test failed: relaying denied") for a in status.alerts)
    tries = next(s for s in status.stages if s.name == "relay_test").attempts
    await time_env.sleep(timedelta(days=3))  # needing attention, it waits for a person: no more tests
    assert next(s for s in (await status_of(handle)).stages if s.name == "relay_test").attempts == tries

    world.registry.confirm_after = 0
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("relay_test", "alice", "entry active now"))
    status = await until_stage(handle, "await_cutover", "waiting")
    assert status.transcript.passed and not status.attention


async def test_waiting_for_the_cutover_reminds_escalates_and_extends(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=1)
    settings, move, handle = await start(world, reminder_interval=DAY, escalate_after=3 * DAY)
    await reach(time_env, handle, "await_cutover")
    await time_env.sleep(timedelta(days=2))
    assert (await status_of(handle)).state == MoveState.WAITING
    await time_env.sleep(timedelta(days=1, hours=1))
    status = await status_of(handle)
    assert status.state == MoveState.NEEDS_ATTENTION and any("no cut-over after 3 days" in a for a in status.alerts)
    await handle.execute_update(ServerMoveWorkflow.extend, ExtendInput(2 * DAY, "bob", "migration weekend"))
    assert (await status_of(handle)).state == MoveState.WAITING
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob"))
    assert (await skip_to_end(time_env, handle)).state == MoveState.DONE
    reminders = sum(1 for _, action, _ in actions(settings, handle.id) if action == "reminder")
    assert reminders >= 3


async def test_internal_relay_skips_the_list_and_tests_mailout_intern(time_env, start, sandbox_factory, netns):
    world = sandbox_factory()
    settings, move, handle = await start(world, req=request(relay_scope="internal", institution=""))
    status = await until_stage(handle, "await_cutover", "waiting")
    skipped = {s.name: s.detail for s in status.stages if s.state == StageState.SKIPPED}
    assert (
        set(skipped) == {"request_tsl", "await_tsl", "configure_mta"}
        and "needs no list entry" in skipped["request_tsl"]
    )
    assert status.transcript.passed and status.transcript.relay.startswith("mailout-intern.")
    assert firewall_of(netns) == covered(firewall_plan(move))
    assert {c.split()[1] for c in firewall_of(netns) if c.startswith("out")} == {
        "130.83.157.89/32",
        "2001:41b8:83f:1608::25:3/128",
    }
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob"))
    assert (await handle.result()).state == MoveState.DONE
    assert filings(world) == []  # nothing filed for an internal-only server


async def test_unsecure_files_the_unsecure_list_and_tests_plain_smtp(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=1)
    settings, move, handle = await start(world, req=request(relay_scope="unsecure"))
    status = await reach(time_env, handle, "await_cutover")
    assert any("only to campus addresses" in w for w in status.warnings)
    assert status.transcript.passed and status.transcript.tls is None
    assert [s.step for s in status.transcript.steps] == ["banner", "ehlo", "mail", "rcpt", "quit"]
    assert status.postfix == [f"relayhost = [{move.relay.host}]:{move.relay.port}"]  # no TLS lines
    assert world.relays["unsecure"].handler.seen[-1].tls is False
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob"))
    assert (await handle.result()).state == MoveState.DONE
    assert filings(world) == [("unsecure", NEW, "127.0.0.2"), ("unsecure-removal", OLD, "127.0.0.1")]


async def test_same_name_and_address_keeps_the_entry(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=0)
    world.registry.file("filed-years-ago", _tsl_filing())  # the server's entry exists already
    settings, move, handle = await start(world, req=request(old=NEW))  # reinstalled in place
    status = await until_stage(handle, "await_cutover", "waiting")
    skipped = {s.name: s.detail for s in status.stages if s.state == StageState.SKIPPED}
    assert set(skipped) == {"request_tsl", "await_tsl", "configure_mta"} and "unchanged" in skipped["request_tsl"]
    assert status.transcript.passed
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob"))
    assert (await handle.result()).state == MoveState.DONE
    assert [s.state for s in (await status_of(handle)).stages][-2] == StageState.SKIPPED  # the entry stays
    assert len(world.registry.requests) == 1


@pytest.mark.parametrize(
    "stage, portal_mode, agent, undone",
    [
        ("request_tsl", "manual", True, set()),
        ("await_tsl", "http", True, {"entry"}),
        ("open_firewall", "http", False, {"entry"}),
        ("relay_test", "http", True, {"entry", "firewall"}),
        ("await_cutover", "http", True, {"entry", "firewall"}),
    ],
)
async def test_cancel_undoes_what_was_done(time_env, start, sandbox_factory, netns, stage, portal_mode, agent, undone):
    world = sandbox_factory(confirm_after=10**9)
    settings, move, handle = await start(world, portal_mode=portal_mode, req=request(agent=agent))
    if stage in ("open_firewall", "relay_test", "await_cutover"):
        await until_stage(handle, "await_tsl", "waiting")
        if stage == "await_cutover":
            world.registry.confirm_after = 0  # the entry is active: the relay test passes at once
        await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_tsl", "alice"))
    await until_stage(handle, stage, "waiting")
    await until_quiet(handle)
    reply = await handle.execute_update(ServerMoveWorkflow.cancel, CancelInput("carol", "wrong machine"))
    assert ("nothing had been changed" in reply) if not undone else reply.startswith("cancelling:")
    result = await skip_to_end(time_env, handle)
    assert result.state == MoveState.CANCELLED
    assert firewall_of(netns) == set()
    withdrawn = ("tsl-removal", NEW, "127.0.0.2")
    assert (withdrawn in filings(world)) == ("entry" in undone)
    assert [k for k, *_ in filings(world)].count("tsl-removal") == (1 if "entry" in undone else 0)
    trail = actions(settings, handle.id)
    assert ("carol", "cancel", stage) in trail and trail[-1][1] == "cancelled"


async def test_cancel_is_refused_once_the_old_entry_goes(time_env, start, sandbox_factory, netns):
    world = sandbox_factory(confirm_after=1)
    settings, move, handle = await start(world, portal_mode="manual")
    # manual mode files nothing at the stand-in: the entry filed by hand is listed by the centre
    world.registry.file("by-hand", _tsl_filing())
    await until_stage(handle, "request_tsl", "waiting")
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("request_tsl", "alice", "filed"))
    await until_stage(handle, "await_tsl", "waiting")
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_tsl", "alice"))
    await reach(time_env, handle, "await_cutover")
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("await_cutover", "bob"))
    status = await until_stage(handle, "remove_old_tsl", "waiting")
    assert status.form["request"] == "remove entry" and status.form["fqdn"] == OLD
    assert status.form["form"].endswith("antrag-tsl.php")
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(ServerMoveWorkflow.cancel, CancelInput("carol"))
    assert "old entry is already being removed" in str(err.value.cause)
    await handle.execute_update(ServerMoveWorkflow.confirm, ConfirmInput("remove_old_tsl", "alice", "filed"))
    assert (await handle.result()).state == MoveState.DONE


def _tsl_filing():
    from mailmove.sandbox.portal import Filing

    return Filing(kind="tsl", subject=NEW, values={"ipv4": "127.0.0.2"})
