"""Watching and driving a move's workflow through its Temporal handle: its status, its stage,
time skipped until it gets somewhere, and a clean server afterwards."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from mailmove.base.model import MoveStatus
from mailmove.store.db import sessions
from mailmove.store.records import audit_trail
from tests.support.polling import wait_for

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


async def status_of(handle: WorkflowHandle) -> MoveStatus:
    return await handle.query("status", result_type=MoveStatus)


async def until_stage(handle: WorkflowHandle, stage: str, state: str | None = None, timeout: float = 60) -> MoveStatus:
    seen = []

    async def check():
        status = await status_of(handle)
        current = next(s for s in status.stages if s.name == status.stage)
        seen[:] = [f"{status.stage}/{current.state.value} ({current.last_error or current.waiting_for})"]
        return status if status.stage == stage and (state is None or current.state.value == state) else None

    try:
        return await wait_for(check, timeout, what=f"stage {stage} {state or ''}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the move is at {seen}") from None


async def started_since(client: Client, workflow_id: str, since) -> bool:
    """Whether a run of `workflow_id` began at or after `since` (the dev server is shared, so an
    earlier test's run of the same id may exist)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return description.start_time >= since


async def terminate_running(client: Client, *workflow_ids: str) -> None:
    """Leave the shared dev server clean: a move left running would block the next test's."""
    for wid in workflow_ids:
        handle = client.get_workflow_handle(wid)
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")
        except RPCError:
            pass


async def terminate_all_running(client: Client) -> list[str]:
    """Every workflow still running on the server terminated; their ids."""
    ids = [w.id async for w in client.list_workflows('ExecutionStatus="Running"')]
    await terminate_running(client, *ids)
    return ids


async def until_quiet(handle: WorkflowHandle, timeout: float = 30) -> None:
    """Until none of the move's activities is running. Before an update on the time-skipping
    server: the Java test server answers a cancel that races an activity's completion with
    ACTIVITY_UNKNOWN, and refused an update's workflow task that raced one (the mail or the audit
    write that follows a stage's "waiting") with "invalid history builder state for action" (seen
    in CI on a loaded machine); either way the task never completes and the clock stops. The real
    server copes."""

    async def quiet() -> bool:
        return not (await handle.describe()).raw_description.pending_activities

    await wait_for(quiet, timeout, what="no running activity")


async def reach(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    stage: str,
    state: str = "waiting",
    step: timedelta = timedelta(minutes=10),
    limit: int = 300,
) -> MoveStatus:
    """Skip time in steps (with a breath of real time for the stand-ins) until the move is at `stage`."""
    for _ in range(limit):
        status = await status_of(handle)
        current = next(s for s in status.stages if s.name == status.stage)
        if status.stage == stage and current.state.value == state:
            return status
        await env.sleep(step)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not reach {stage}/{state}; it is at {status.stage}/{current.state.value}")


async def skip_to_end(
    env: WorkflowEnvironment, handle: WorkflowHandle, step: timedelta = timedelta(hours=1), limit: int = 500
):
    """Skip time in steps until the workflow closes (the server's own auto-skip in `result()`
    did not advance timers here), then return its result."""
    for _ in range(limit):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return await handle.result()
        await env.sleep(step)
    raise AssertionError(f"{handle.id} still running after {limit} steps of {step}")


def actions(settings, wid: str) -> list[tuple[str, str, str]]:
    """The move's audit trail in the store: (actor, action, stage) in order."""
    with sessions(settings.database.url)() as session:
        return [(e.actor, e.action, e.stage) for e in audit_trail(session, wid)]


async def pending(handle: WorkflowHandle, activity: str) -> PendingActivityInfo | None:
    description = await handle.describe()
    return next((p for p in description.raw_description.pending_activities if p.activity_type.name == activity), None)


async def in_flight(handle: WorkflowHandle, activity: str, timeout: float = 90, after: int = 0) -> PendingActivityInfo:
    """The pending activity once an attempt later than `after` has started."""

    async def started() -> PendingActivityInfo | None:
        info = await pending(handle, activity)
        return info if info and info.state == STARTED and info.attempt > after else None

    return await wait_for(started, timeout=timeout, interval=0.1, what=f"{activity} in flight")


def started_at(info: PendingActivityInfo) -> float:
    return info.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
