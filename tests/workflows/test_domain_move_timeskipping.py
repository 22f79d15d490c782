"""DomainMoveWorkflow on the time-skipping server, with the real activities against real BIND,
the portal stand-in and the gateway SMTP stand-in: days of waiting pass in seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.worker import Replayer

from mailmove.base import ids
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import CancelInput, ConfirmInput, ExtendInput, MoveState
from mailmove.sandbox.portal import Filing
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.models import Guard
from mailmove.store.records import list_migrations
from tests.support.dns import served_mx
from tests.support.domain_move import DOMAIN, FINAL, ORIGINAL, WITH_LEGACY, both_serve, start
from tests.support.moves import actions, skip_to_end, status_of, until_quiet, until_stage
from tests.support.payloads import encrypting
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

DAY = 86400


async def test_happy_path_with_a_14_day_registration_wait(time_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)  # the centre never confirms by itself
    settings, handle = await start(
        time_env, worker_for, world, probe_interval=DAY, reminder_interval=DAY, escalate_after=7 * DAY
    )
    status = await until_stage(handle, "request_domain", "waiting")
    both_serve(world, WITH_LEGACY)
    assert status.form["domain"] == DOMAIN and status.form["form"].endswith("antrag-maildomain.php")
    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("request_domain", "alice", "filed, ticket 42"))

    await until_stage(handle, "await_registration", "waiting")
    await time_env.sleep(timedelta(days=14))
    status = await status_of(handle)
    assert status.stage == "await_registration"
    assert status.state == MoveState.NEEDS_ATTENTION and status.attention
    assert any("no registration after 7 days" in a for a in status.alerts)
    both_serve(world, WITH_LEGACY)  # the legacy MX stays while the domain is not registered

    await until_quiet(handle)
    await handle.execute_update(
        DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "bob", "HRZ mail of 12 May")
    )
    result = await handle.result()
    assert result.state == MoveState.DONE
    assert "may now be switched off" in result.message
    both_serve(world, FINAL)

    status = await status_of(handle)
    wait = next(s for s in status.stages if s.name == "await_registration")
    assert wait.ended - wait.started >= timedelta(days=14)
    assert [s.state.value for s in status.stages] == ["done"] * 7
    trail = actions(settings, handle.id)
    assert ("alice", "confirm", "request_domain") in trail
    assert ("bob", "confirm", "await_registration") in trail
    assert 13 <= sum(1 for _, action, _ in trail if action == "reminder") <= 14
    assert sum(1 for _, action, _ in trail if action == "escalated") == 1
    with sessions(settings.database.url)() as session:
        row = next(m for m in list_migrations(session) if m.workflow_id == handle.id)
        assert (row.stage, row.state, row.attention) == ("done", "done", False)
    # fourteen days of timers, probes, reminders and updates replay deterministically
    await Replayer(workflows=[DomainMoveWorkflow], data_converter=encrypting()).replay_workflow(
        await handle.fetch_history()
    )


async def test_detection_by_the_gateway_mx_and_the_portal(time_env, worker_for, sandbox_factory):
    """http mode: filed once through the portal; registration detected without a person."""
    world = sandbox_factory(confirm_after=2)
    settings, handle = await start(time_env, worker_for, world, portal_mode="http", probe_interval=3600)
    result = await skip_to_end(time_env, handle)
    assert result.state == MoveState.DONE
    assert len(world.registry.requests) == 1
    status = await status_of(handle)
    detail = next(s for s in status.stages if s.name == "await_registration").detail
    assert "confirmed" in detail or "accepts postmaster@" in detail


async def test_a_move_without_trouble_ends_without_an_alert(time_env, worker_for, sandbox_factory):
    """Nothing to say, so nothing said: not even that its guard was not scheduled (this server has
    no Schedules; the worker's `ensure_schedule` is a fake that keeps the guard's row)."""
    world = sandbox_factory(confirm_after=2)
    timing = {"probe_interval": 3600, "escalate_after": 30 * DAY}
    settings = settings_for(world, time_env, portal_mode="http", timing=timing)
    await worker_for(time_env.client, settings)
    request = DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="alice", no_external=True)
    wid = await control.start_domain_move(
        time_env.client, settings, await control.prepare_domain_move(settings, request)
    )
    handle = time_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)
    assert (await skip_to_end(time_env, handle)).state == MoveState.DONE
    assert (await status_of(handle)).alerts == []
    with sessions(settings.database.url)() as session:
        assert session.get(Guard, wid).schedule_id == ids.guard_id(wid)


async def test_reminders_escalation_and_extend(time_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)
    settings, handle = await start(
        time_env,
        worker_for,
        world,
        portal_mode="http",
        probe_interval=DAY,
        reminder_interval=12 * 3600,
        escalate_after=2 * DAY,
    )
    await until_stage(handle, "await_registration", "waiting")
    await time_env.sleep(timedelta(days=1))
    status = await status_of(handle)
    assert status.state == MoveState.WAITING and not status.attention

    await time_env.sleep(timedelta(days=1, hours=12))
    status = await status_of(handle)
    assert status.state == MoveState.NEEDS_ATTENTION and status.attention

    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.extend, ExtendInput(3 * DAY, "carol", "centre is on holiday"))
    status = await status_of(handle)
    assert status.state == MoveState.WAITING and not status.attention
    eta = next(s for s in status.stages if s.name == "await_registration").eta
    await time_env.sleep(timedelta(days=2))
    assert (await status_of(handle)).state == MoveState.WAITING
    await time_env.sleep(timedelta(days=2))
    status = await status_of(handle)
    assert status.state == MoveState.NEEDS_ATTENTION and eta is not None

    trail = actions(settings, handle.id)
    assert ("carol", "extend", "await_registration") in trail
    assert sum(1 for _, a, _ in trail if a == "escalated") == 2
    assert sum(1 for _, a, _ in trail if a == "reminder") >= 9
    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.cancel, CancelInput("carol", "giving up"))
    assert (await handle.result()).state == MoveState.CANCELLED
    both_serve(world, ORIGINAL)


@pytest.mark.parametrize("stage", ["add_gateway_mx", "request_domain", "await_registration"])
async def test_cancel_at_every_stage_restores_the_original_mx(time_env, worker_for, sandbox_factory, stage):
    await cancel_at(time_env, worker_for, sandbox_factory, stage)


@pytest.mark.parametrize("stage", ["preflight", "add_gateway_mx", "request_domain", "await_registration"])
async def test_cancel_at_every_stage_on_the_dev_server(dev_env, worker_for, sandbox_factory, stage):
    # the Java time-skipping server never settles the cancel of an activity in retry backoff
    # (the real server does), so preflight is cancelled here only
    await cancel_at(dev_env, worker_for, sandbox_factory, stage)


async def cancel_at(env, worker_for, sandbox_factory, stage):
    # Each stage is made to wait: preflight on a silent server, add_gateway_mx on a secondary
    # that gets no NOTIFY, request_domain on a manual filing, await_registration on the centre.
    world = sandbox_factory(confirm_after=10**9, notify="off" if stage == "add_gateway_mx" else "now")
    silence = world.dns.secondary.stop if stage == "preflight" else None
    portal = "http" if stage == "await_registration" else "manual"
    settings, handle = await start(env, worker_for, world, portal, before_start=silence, probe_interval=DAY)
    await until_stage(handle, stage, None if stage == "preflight" else "waiting")
    if stage == "add_gateway_mx":
        assert served_mx(world.dns.primary.port, DOMAIN) == WITH_LEGACY
        assert served_mx(world.dns.secondary.port, DOMAIN) == ORIGINAL
    if stage != "preflight":
        await until_quiet(handle)
    reply = await handle.execute_update(DomainMoveWorkflow.cancel, CancelInput("dave", f"cancel at {stage}"))
    assert ("nothing had been changed" in reply) if stage == "preflight" else ("restored" in reply)
    result = await handle.result()
    assert result.state == MoveState.CANCELLED
    assert served_mx(world.dns.primary.port, DOMAIN) == ORIGINAL
    if stage != "preflight":
        assert served_mx(world.dns.secondary.port, DOMAIN) == ORIGINAL
    status = await status_of(handle)
    assert status.state == MoveState.CANCELLED
    trail = actions(settings, handle.id)
    assert ("dave", "cancel", stage) in trail and trail[-1][1] == "cancelled"


async def test_a_cancel_through_temporal_itself_also_restores_the_mx(dev_env, worker_for, sandbox_factory):
    """`temporal workflow cancel` (not mailmove's update) before the point of no return."""
    world = sandbox_factory(confirm_after=10**9)
    settings, handle = await start(dev_env, worker_for, world)
    await until_stage(handle, "request_domain", "waiting")
    both_serve(world, WITH_LEGACY)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    both_serve(world, ORIGINAL)
    assert actions(settings, handle.id)[-1] == ("temporal", "cancelled", "request_domain")


async def test_update_validators(time_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9, ttl=3 * DAY)  # a propagation wait that outlasts a skip
    settings, handle = await start(time_env, worker_for, world, probe_interval=DAY)
    await until_stage(handle, "request_domain", "waiting")

    await until_quiet(handle)
    for bad, field in [
        (ConfirmInput("await_registration", "eve"), "not waiting"),
        (ConfirmInput("no_such_stage", "eve"), "is not a stage"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(DomainMoveWorkflow.confirm, bad)
        assert field in str(err.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(DomainMoveWorkflow.extend, ExtendInput(DAY, "eve"))
    assert "no wait to extend" in str(err.value.cause)
    assert ("eve", "confirm", "await_registration") not in actions(settings, handle.id)  # rejected: not written

    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("request_domain", "eve", "filed"))
    with pytest.raises(WorkflowUpdateFailedError):  # a second confirm of the same stage
        await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("request_domain", "eve", "again"))
    await until_stage(handle, "await_registration", "waiting")
    world.registry.file("by-hand", Filing(kind="domain", subject=DOMAIN))  # what the postmaster filed
    world.registry.confirm_after = 0  # the centre registers it: the next probe detects it
    await time_env.sleep(timedelta(days=1))
    await until_stage(handle, "await_propagation", "waiting")
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(DomainMoveWorkflow.cancel, CancelInput("eve"))
    assert "legacy MX is already being removed" in str(err.value.cause)
    result = await skip_to_end(time_env, handle, timedelta(hours=12))
    assert result.state == MoveState.DONE
    both_serve(world, FINAL)


async def test_a_failed_stage_waits_for_a_retry_and_never_fails_silently(time_env, worker_for, sandbox_factory):
    """A wrong TSIG key: the update is refused, the move needs attention; fixed key + confirm: it goes on."""
    world = sandbox_factory(confirm_after=0)
    good_key = world.dns.keyfile.read_text()
    world.dns.keyfile.write_text(good_key.replace('secret "', 'secret "AAAA'))
    settings, handle = await start(time_env, worker_for, world, portal_mode="http", probe_interval=60)
    status = await until_stage(handle, "add_gateway_mx", "waiting")
    assert status.attention and status.state == MoveState.NEEDS_ATTENTION
    current = next(s for s in status.stages if s.name == "add_gateway_mx")
    assert "TSIG" in current.last_error or "BADSIG" in current.last_error.upper()
    both_serve(world, ORIGINAL)

    world.dns.keyfile.write_text(good_key)
    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("add_gateway_mx", "frank", "key fixed"))
    assert (await skip_to_end(time_env, handle, timedelta(minutes=1))).state == MoveState.DONE
    both_serve(world, FINAL)


async def test_a_domain_that_does_not_exist_stops_in_preflight(time_env, worker_for, sandbox_factory):
    world = sandbox_factory()
    settings = settings_for(world, time_env)
    await worker_for(time_env.client, settings)
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, "nowhere.sandbox.test"))
    handle = time_env.client.get_workflow_handle_for(
        DomainMoveWorkflow.run, await control.start_domain_move(time_env.client, settings, move)
    )
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    assert "nowhere.sandbox.test" in str(err.value.cause)
    both_serve(world, ORIGINAL)
