"""The real workflows on the time-skipping server with fake activities
(tests/support/fake_activities.py) instead of real servers: a worker and a host agent on
queues of a test's own, the moves it starts, and their histories recorded for
tests/workflows/test_histories.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from mailmove.base.model import CancelInput, ConfirmInput, MoveStatus
from mailmove.base.payload_codec import data_converter
from mailmove.worker import WORKFLOWS
from tests.support.fake_activities import FakeActivities

# `MAILMOVE_RECORD_HISTORIES=1 pytest tests/workflows/test_*_logic.py` stores the histories
# that tests/workflows/test_histories.py replays on later releases
RECORD = "MAILMOVE_RECORD_HISTORIES"
ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "workflows" / "histories"

BOUND = timedelta(seconds=10)  # of each call to the server, in real time
TASK_ENDS = (
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
)
ACTIVITY_ENDS = {  # the event that ends an activity -> its attributes, which name the scheduling event
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


@dataclass
class FakeWorld:
    """The real workflows on a worker with the fakes (and a host agent with its fakes), on the
    time-skipping server. Time skips only inside `finish` and `skip`; otherwise the server's
    clock runs as the real one does. Payloads are in clear: encryption is not the subject
    here, and a history recorded here replays without the tests' key.

    The time-skipping server fails a workflow task for good when the move cancels an activity
    that has just been handed to a worker or has just answered (ACTIVITY_UNKNOWN; the real
    server takes it in its stride), and then keeps its clock stopped for the rest of the test: so
    `until` also waits for the move to be idle, and a person's confirm or cancel after it never
    races an activity. Every call here is bounded, so that a stuck move fails
    its test instead of hanging it."""

    env: WorkflowEnvironment
    client: Client
    fakes: FakeActivities
    task_queue: str
    agent_queue: str
    ids: list[str] = field(default_factory=list)  # every workflow the test started, and its children

    async def start(self, run: Callable, arg: Any, workflow_id: str = "") -> WorkflowHandle:
        workflow_id = workflow_id or f"logic-{uuid.uuid4().hex[:12]}"
        self.ids.append(workflow_id)
        return await self.client.start_workflow(run, arg, id=workflow_id, task_queue=self.task_queue)

    async def status(self, handle: WorkflowHandle) -> MoveStatus:
        return await handle.query("status", result_type=MoveStatus, rpc_timeout=BOUND)

    async def confirm(
        self, handle: WorkflowHandle, stage: str, actor: str = "alice", note: str = "", lost: list[str] = ()
    ) -> str:
        return await self.update(handle, "confirm", ConfirmInput(stage, actor, note, list(lost)))

    async def cancel(self, handle: WorkflowHandle) -> str:
        return await self.update(handle, "cancel", CancelInput("carol", "not now"))

    async def update(self, handle: WorkflowHandle, name: str, arg: Any) -> str:
        """The answer to a move's update (a rejected one raises WorkflowUpdateFailedError)."""
        return await asyncio.wait_for(handle.execute_update(name, arg, result_type=str), BOUND.total_seconds())

    async def until(
        self,
        handle: WorkflowHandle,
        stage: str,
        state: str = "waiting",
        where: Callable[[MoveStatus], bool] = lambda status: True,
        idle: bool = True,
    ) -> MoveStatus:
        """Polls (in real time, the server's clock running) until the move is at `stage` in
        `state`, `where` holds and it is idle (unless told not to wait for that: an activity
        beside the stages, a mail held on its way, keeps it busy)."""
        deadline = asyncio.get_running_loop().time() + BOUND.total_seconds()
        seen = "not started"
        while True:
            try:
                status = await self.status(handle)
            except RPCError as err:  # a wave's row may not have started yet
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            else:
                current = next(s for s in status.stages if s.name == status.stage)
                seen = f"{status.stage}/{current.state.value} ({status.alerts})"
                if status.stage == stage and current.state.value == state and where(status):
                    if not idle or await self.idle(handle):
                        return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not at {stage}/{state}: at {seen}")
            await asyncio.sleep(0.02)

    async def idle(self, handle: WorkflowHandle) -> bool:
        """Whether the move has neither a workflow task nor an activity under way, as its history
        says (the time-skipping server's `describe` shows no workflow task): it waits for a timer
        or a person. (An answer schedules its workflow task at once, and that task the next
        activities; a local activity runs inside its workflow task.)"""
        task_open, activities = False, set()
        async for event in handle.fetch_history_events(rpc_timeout=BOUND):
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                task_open = True
            elif event.event_type in TASK_ENDS:
                task_open = False
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                activities.add(event.event_id)
            elif event.event_type in ACTIVITY_ENDS:
                activities.discard(getattr(event, ACTIVITY_ENDS[event.event_type]).scheduled_event_id)
        return not task_open and not activities

    async def closed(self, handle: WorkflowHandle) -> WorkflowExecutionStatus:
        """How the workflow ended, once it has (a child cancelled with its parent ends after it)."""
        deadline = asyncio.get_running_loop().time() + BOUND.total_seconds()
        while (status := (await handle.describe(rpc_timeout=BOUND)).status) == WorkflowExecutionStatus.RUNNING:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{handle.id} still runs")
            await asyncio.sleep(0.02)
        return status

    async def finish(self, handle: WorkflowHandle) -> Any:
        """The workflow's result, time skipping while it runs."""
        return await asyncio.wait_for(handle.result(), 2 * BOUND.total_seconds())

    async def skip(self, duration: timedelta) -> None:
        await asyncio.wait_for(self.env.sleep(duration), BOUND.total_seconds())

    async def stop_all(self) -> None:
        """Terminate what still runs: an activity left scheduled with no worker would hold the
        shared time-skipping server's clock for the tests after this one."""
        for workflow_id in self.ids:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                if (await handle.describe(rpc_timeout=BOUND)).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test over", rpc_timeout=BOUND)
            except RPCError:
                pass


@asynccontextmanager
async def fake_world(env: WorkflowEnvironment, fakes: FakeActivities | None = None) -> AsyncIterator[FakeWorld]:
    """A worker (every workflow, the fakes) and a host agent on queues of their own until the
    block ends; then every workflow started is ended and both workers stop."""
    client = Client(**{**env.client.config(), "data_converter": data_converter(None)})
    fakes = fakes or FakeActivities()
    queue = f"logic-{uuid.uuid4().hex[:12]}"
    world = FakeWorld(env, client, fakes, queue, f"{queue}-agent")
    throttle = {"max_heartbeat_throttle_interval": timedelta(seconds=0.2)}  # a cancel reaches a held attempt at once
    workers = [
        # without the sandbox a move runs in three quarters of the time; the quick run still
        # replays the stored histories in it (tests/workflows/test_histories.py)
        Worker(
            client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=fakes.activities(),
            workflow_runner=UnsandboxedWorkflowRunner(),
            **throttle,
        ),
        Worker(client, task_queue=world.agent_queue, activities=fakes.agent_activities(), **throttle),
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield world
    finally:
        await world.stop_all()
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*tasks)


async def keep_history(handle: WorkflowHandle, name: str) -> None:
    """With $MAILMOVE_RECORD_HISTORIES set, store the finished run's history as
    `histories/<name>-<commit>.json`, named by the commit that ran it."""
    if not os.environ.get(RECORD):
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    (HISTORIES / f"{name}-{commit}.json").write_text((await handle.fetch_history()).to_json())


def patches(history: WorkflowHistory) -> list[str]:
    """The ids of the `workflow.patched` paths the run took, in order."""
    return [
        json.loads(payload.data)["id"]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        for payload in e.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
