"""WaveWorkflow's logic on the time-skipping server with fake activities
(tests/support/fake_activities.py), no real server: how many rows run at once and how fast
they start, each row's outcome (done, failed, refused), a cancel of one row and of the whole
wave, and rows missing from the store."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from itertools import pairwise

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from mailmove.base.model import (
    DomainMoveInput,
    MxRecord,
    Relay,
    ServerMoveInput,
    Timings,
    TslEntry,
    WaveInput,
    WaveRow,
    WaveStatus,
    mx_key,
)
from tests.support.fake_world import FakeWorld, keep_history
from workflows.domain_move import DomainMoveWorkflow
from workflows.wave import WaveWorkflow

pytestmark = pytest.mark.temporal

GATEWAY = ["a.mx.gw.test", "b.mx.gw.test"]


def domain_row(line: int, domain: str, portal_mode: str = "http", gateway: list[str] = GATEWAY) -> WaveRow:
    move = DomainMoveInput(domain, f"mail.{domain}", list(gateway), portal_mode=portal_mode, timings=Timings())
    return WaveRow(line, "domain", domain, f"logic-{uuid.uuid4().hex[:12]}", domain_move=move)


def server_row(world: FakeWorld, line: int, fqdn: str) -> WaveRow:
    entry = TslEntry("Department of Physics", ["ab12cdef", "xy34ghij"], "postmaster@phys.test", ["phys.test"])
    move = ServerMoveInput(
        f"old.{fqdn}",
        fqdn,
        "192.0.2.30",
        "",
        "external",
        Relay("mailout.gw.test", 25, True),
        entry,
        "postmaster@phys.test",
        "someone@example.org",
        ["198.51.100.0/27"],
        ["198.51.100.40"],
        agent_queue=world.agent_queue,
        portal_mode="http",
        tsl_form="https://portal.test/tsl",
    )
    return WaveRow(line, "server", fqdn, f"logic-{uuid.uuid4().hex[:12]}", server_move=move)


async def start_wave(
    world: FakeWorld, rows: list[WaveRow], concurrency: int, rate: float, stored: int | None = None
) -> WorkflowHandle:
    """A wave of `rows`, the first `stored` of them in the (fake) store."""
    batch = uuid.uuid4().hex
    world.fakes.rows[batch] = rows[:stored]
    world.ids.extend(r.workflow_id for r in rows)
    return await world.start(WaveWorkflow.run, WaveInput("autumn", batch, len(rows), concurrency, rate, "alice"))


async def until_rows(handle: WorkflowHandle, states: list[str], timeout: float = 10) -> WaveStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(WaveWorkflow.status)
        if [r.state for r in status.rows] == states:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"rows are {[r.state for r in status.rows]}, not {states}")
        await asyncio.sleep(0.02)


def original(row: WaveRow) -> tuple[MxRecord, ...]:
    return (MxRecord(10, f"mail.{row.subject}"),)


@pytest.mark.parametrize(
    ("concurrency", "rate", "moves"), [(2, 60.0, 4), (3, 2.0, 3)], ids=["2-at-once-60-a-minute", "3-at-once-2-a-minute"]
)
async def test_a_wave_keeps_to_its_concurrency_and_rate(
    world: FakeWorld, concurrency: int, rate: float, moves: int
) -> None:
    world.fakes.registered = "portal"
    rows = [domain_row(i + 2, f"d{i}.wave.test") for i in range(moves)]
    handle = await start_wave(world, rows, concurrency, rate)
    assert await world.finish(handle) == {"done": moves}

    status = await handle.query(WaveWorkflow.status)
    assert status.finished and [(r.line, r.subject, r.state) for r in status.rows] == [
        (r.line, r.subject, "done") for r in rows
    ]
    assert all("may now be switched off" in r.message for r in status.rows)
    starts = [r.started for r in status.rows]
    assert all(b - a >= timedelta(seconds=60 / rate) for a, b in pairwise(starts))
    running = [sum(o.started <= r.started < o.ended for o in status.rows) for r in status.rows]
    assert max(running) == concurrency  # a move lasts minutes (the old TTL): the slots fill up
    assert all(world.fakes.served(r.subject) == mx_key([MxRecord(10, h) for h in GATEWAY]) for r in rows)
    child = world.client.get_workflow_handle(rows[0].workflow_id)
    assert (await child.describe()).parent_id == handle.id  # the row's own id, under the wave


async def test_each_row_ends_as_its_move_does(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    busy = domain_row(5, "busy.wave.test", "manual")
    await world.start(DomainMoveWorkflow.run, busy.domain_move, workflow_id=busy.workflow_id)  # already moving
    rows = [
        domain_row(2, "chem.wave.test"),
        server_row(world, 3, "mx.phys.wave.test"),
        domain_row(4, "bad.wave.test", gateway=["mail.bad.wave.test"]),
        busy,
    ]
    handle = await start_wave(world, rows, concurrency=4, rate=600)
    server = world.client.get_workflow_handle(rows[1].workflow_id)
    await world.until(server, "await_cutover")
    await world.confirm(server, "await_cutover", "bob")

    assert await world.finish(handle) == {"done": 2, "failed": 1, "refused": 1}
    status = await handle.query(WaveWorkflow.status)
    assert [r.state for r in status.rows] == ["done", "done", "failed", "refused"]
    assert status.rows[1].message.startswith("mx.phys.wave.test sends through mailout.gw.test")
    assert status.rows[2].message == "preflight: the legacy MX is one of the gateway hosts"
    assert status.rows[3].message == f"busy.wave.test is already moving ({busy.workflow_id})"
    assert status.rows[3].started is None
    await keep_history(handle, "wave")


async def test_a_row_waiting_for_a_person_holds_its_slot_and_a_cancel_of_the_wave_reaches_every_move(
    world: FakeWorld,
) -> None:
    fakes = world.fakes
    rows = [domain_row(i + 2, f"d{i}.wave.test", "manual") for i in range(3)]
    handle = await start_wave(world, rows, concurrency=2, rate=600)
    moves = [world.client.get_workflow_handle(r.workflow_id) for r in rows]
    await until_rows(handle, ["running", "running", "pending"])
    await world.until(moves[0], "request_domain")
    await world.cancel(moves[0])
    status = await until_rows(handle, ["cancelled", "running", "running"])
    assert status.rows[0].message == f"cancelled; the MX set is restored to 10 mail.{rows[0].subject}."

    # every row has started: the wave waits for its moves, and a cancel of it cancels each one
    # (a row still pending when the wave is cancelled never starts; the moves running then are
    # left to the parent close policy, which the time-skipping server does not carry out)
    for move in moves[1:]:
        await world.until(move, "request_domain")  # waiting, no activity under way
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failed:
        await world.finish(handle)
    assert isinstance(failed.value.cause, CancelledError)
    # its own cancel ended the first move with a result; the wave's cancels the others through Temporal
    assert [await world.closed(m) for m in moves] == [WorkflowExecutionStatus.COMPLETED] + [
        WorkflowExecutionStatus.CANCELED
    ] * 2
    for row, move in zip(rows, moves, strict=True):
        assert fakes.served(row.subject) == original(row)
        assert fakes.actions(move.id, "cancelled") == [("cancelled", "request_domain")]


async def test_rows_missing_from_the_store_fail_the_wave(world: FakeWorld) -> None:
    rows = [domain_row(i + 2, f"d{i}.wave.test") for i in range(3)]
    handle = await start_wave(world, rows, concurrency=2, rate=60, stored=2)
    with pytest.raises(WorkflowFailureError) as failed:
        await world.finish(handle)
    assert str(failed.value.cause) == "the store holds 2 of the wave's 3 rows"
    assert [p.after for p in world.fakes.args("wave_rows")] == [0, 3]  # read in pages, after the last line read
    assert world.fakes.calls_of("record_transition") == []  # no row started
