"""GuardWorkflow's logic and the done path that schedules it, on the time-skipping server with
fake activities: a drift mailed once and cleared when fixed, the relay test through the host
agent (and not run when none takes it), and a finished move's guard made from its input; the
history of a move with the patched done path replays."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Replayer

from mailmove.base import ids
from mailmove.base.guard import GuardInput, domain_guard, server_guard
from mailmove.base.model import Relay, RelayTestQuery, Timings
from mailmove.base.report import Check, DomainCheckQuery, Report, ServerCheckQuery
from mailmove.worker import WORKFLOWS
from tests.support.fake_activities import passed, returns
from tests.support.fake_world import FakeWorld, patches
from tests.workflows.test_domain_move_logic import move
from tests.workflows.test_server_move_logic import server_move
from workflows.domain_move import DomainMoveWorkflow
from workflows.guard import GuardWorkflow
from workflows.server_move import ServerMoveWorkflow

pytestmark = pytest.mark.temporal

DOMAIN = "chem.test"
WID = f"domain-move:{DOMAIN}"
CONTACT = f"postmaster@{DOMAIN}"
RUNS = itertools.count()  # each run's time, as its schedule appends it to the id
OLD_MX = Check("mx.plan", "MX", "error", "mail.chem.test is in the MX set again", fix="delete `MX 10 mail.chem.test.`")


def report(*checks: Check) -> Report:
    return Report("domain", DOMAIN, "after", datetime.now(UTC).isoformat(), [*passed("domain", DOMAIN).checks, *checks])


async def guarding(world: FakeWorld, guard: GuardInput) -> WorkflowHandle:
    """A run as its schedule starts it: no argument, the id `guard:<move id>-<time>`; what it
    checks is the guard's (the fakes' `schedules`, the store's rows in production)."""
    world.fakes.schedules[guard.workflow_id] = guard
    run_id = f"{ids.guard_id(guard.workflow_id)}-2026-12-01T05:{next(RUNS) % 3600 // 60:02d}:{next(RUNS) % 60:02d}Z"
    world.ids.append(run_id)
    return await world.client.start_workflow(GuardWorkflow.run, id=run_id, task_queue=world.task_queue)


def domain_input() -> GuardInput:
    query = DomainCheckQuery(DOMAIN, "after", ["a.mx.gw.test"], 10)
    return GuardInput(WID, "domain", DOMAIN, CONTACT, domain=query, timings=Timings())


async def test_a_drift_is_mailed_once_and_clears_when_fixed(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.baselines[WID] = {}  # the `done` report had no finding
    fakes.script("check_domain", *(returns(r) for r in (report(OLD_MX), report(OLD_MX), report(), report(OLD_MX))))
    results = [await world.finish(await guarding(world, domain_input())) for _ in range(4)]

    assert [(r.drift, r.mailed) for r in results] == [
        (["mx.plan"], True),  # drift: mailed
        (["mx.plan"], False),  # the same drift: not again
        ([], False),  # fixed: cleared
        (["mx.plan"], True),  # back again: news
    ]
    notices = fakes.args("send_notice")
    assert len(notices) == 2 and all(n.to == CONTACT and n.event == "drift" for n in notices)
    assert [c.arg.stage for c in fakes.calls_of("check_domain")] == ["after"] * 4


async def test_a_finding_of_the_done_report_is_no_drift(world: FakeWorld) -> None:
    world.fakes.baselines[WID] = {"mx.plan": "error"}
    world.fakes.script("check_domain", returns(report(OLD_MX)))
    result = await world.finish(await guarding(world, domain_input()))
    assert (result.drift, result.mailed, result.worst) == ([], False, "error")
    assert world.fakes.args("send_notice") == []


def server_input(agent_queue: str, agent_wait: float = 60) -> GuardInput:
    relay = RelayTestQuery(Relay("mailout.gw.test", 25, True), "mx2.chem.test", "a@chem.test", "b@chem.test")
    return GuardInput(
        "server-move:mx2.chem.test", "server", "mx2.chem.test", CONTACT,
        server=ServerCheckQuery("mx2.chem.test", ["192.0.2.2"]), relay=relay, agent_queue=agent_queue,
        agent_wait=agent_wait,
    )  # fmt: skip


async def test_a_server_guard_runs_the_relay_test_through_its_host_agent(world: FakeWorld) -> None:
    result = await world.finish(await guarding(world, server_input(world.agent_queue)))
    [test] = world.fakes.calls_of("relay_test")
    assert test.task_queue == world.agent_queue and not test.arg.send and test.arg.probe_id
    [check] = world.fakes.args("check_server")
    assert check.relay_test.verdict == "passed" and result.note == ""


async def test_without_an_agent_polling_the_relay_test_is_not_run(world: FakeWorld) -> None:
    result = await world.finish(await guarding(world, server_input("nobody-polls", agent_wait=1)))
    assert world.fakes.calls_of("relay_test") == []
    [check] = world.fakes.args("check_server")
    assert check.relay_test is None and result.note.startswith("relay test not run")


async def test_a_done_move_schedules_its_guard_and_replays(world: FakeWorld) -> None:
    world.fakes.registered = "portal"
    args = move()
    handle = await world.start(DomainMoveWorkflow.run, args)
    assert (await world.finish(handle)).state == "done"
    assert world.fakes.schedules == {handle.id: domain_guard(handle.id, args)}
    assert world.fakes.schedules[handle.id].domain.gateway_mx == args.gateway_mx

    history = await handle.fetch_history()
    assert "guard-schedule" in patches(history)  # the done path of a move begun on this release
    assert (await Replayer(workflows=WORKFLOWS).replay_workflow(history)).replay_failure is None


async def test_a_done_server_move_guards_with_its_relay_and_agent(world: FakeWorld) -> None:
    world.fakes.registered = "portal"
    args = server_move(world)
    handle = await world.start(ServerMoveWorkflow.run, args)
    await world.until(handle, "await_cutover")
    await world.confirm(handle, "await_cutover")
    assert (await world.finish(handle)).state == "done"
    guard = world.fakes.schedules[handle.id]
    assert guard == server_guard(handle.id, args)
    assert (guard.agent_queue, guard.relay.relay, guard.relay.send) == (world.agent_queue, args.relay, False)
    assert guard.server.addresses == [args.new_ipv4] and guard.contact == args.entry.contact
