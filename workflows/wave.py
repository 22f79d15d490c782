"""WaveWorkflow: a campus-wide wave of moves, started from one CSV, throttled.

The parent starts one child per row: the same DomainMoveWorkflow or ServerMoveWorkflow a single
`start` runs, under its usual id, so `show`, `confirm` and the dashboard work on it as on any
move. At most `concurrency` children run at once and at most `rate` start a minute: each move
files its request with the centre soon after it starts, so the start rate is the pace at which
requests reach the portal. A child that needs attention waits as it would alone, and the wave
waits for it. Cancelling the wave starts no more rows and asks every running child to cancel
(each compensates as its own cancel would).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows import search
    from workflows.domain_move import DomainMoveWorkflow
    from workflows.migration import error_text
    from workflows.model import DomainMoveInput, MoveResult, ServerMoveInput
    from workflows.server_move import ServerMoveWorkflow

ROW_STATES = ("pending", "running", "done", "failed", "cancelled", "refused")


@dataclass
class WaveRow:
    line: int  # in the CSV file, for people
    kind: str  # domain | server
    subject: str  # the domain, or the new server's FQDN
    workflow_id: str
    domain_move: DomainMoveInput | None = None
    server_move: ServerMoveInput | None = None


@dataclass
class WaveInput:
    name: str
    rows: list[WaveRow]
    concurrency: int  # children running at once, at most
    rate: float  # children started a minute, at most
    requested_by: str = ""


@dataclass
class RowProgress:
    line: int
    kind: str
    subject: str
    workflow_id: str
    state: str = "pending"  # one of ROW_STATES; a running child's stage is in its own status
    started: datetime | None = None
    ended: datetime | None = None
    message: str = ""


@dataclass
class WaveStatus:
    name: str
    concurrency: int
    rate: float
    rows: list[RowProgress]
    finished: bool = False

    def counts(self) -> dict[str, int]:
        return {s: n for s in ROW_STATES if (n := sum(r.state == s for r in self.rows))}


@workflow.defn
class WaveWorkflow:
    @workflow.init
    def __init__(self, args: WaveInput) -> None:
        self.args = args
        self.rows = [RowProgress(r.line, r.kind, r.subject, r.workflow_id) for r in args.rows]
        self.running = 0
        self.finished = False

    @workflow.run
    async def run(self, args: WaveInput) -> dict[str, int]:
        spacing = timedelta(seconds=60 / args.rate)
        followers = []
        for number, (row, progress) in enumerate(zip(args.rows, self.rows, strict=True)):
            if number:
                await workflow.sleep(spacing)
            await workflow.wait_condition(lambda: self.running < args.concurrency)
            handle = await self.start(row, progress)
            if handle is not None:
                followers.append(asyncio.create_task(self.follow(handle, progress)))
        await asyncio.gather(*followers)
        self.finished = True
        return self.status().counts()

    async def start(self, row: WaveRow, progress: RowProgress):
        run = DomainMoveWorkflow.run if row.kind == "domain" else ServerMoveWorkflow.run
        try:
            handle = await workflow.start_child_workflow(
                run,
                row.domain_move if row.kind == "domain" else row.server_move,
                id=row.workflow_id,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=search.at_start(row.kind, row.subject),
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            )
        except WorkflowAlreadyStartedError:
            progress.state, progress.message = "refused", f"{row.subject} is already moving ({row.workflow_id})"
            return None
        self.running += 1
        progress.state, progress.started = "running", workflow.now()
        return handle

    async def follow(self, handle, progress: RowProgress) -> None:
        # no `finally`: a workflow evicted from a worker's cache must not touch workflow APIs
        try:
            result: MoveResult = await handle
            state, message = result.state.value, result.message
        except ChildWorkflowError as err:
            state, message = "failed", error_text(err)
        progress.state, progress.message, progress.ended = state, message, workflow.now()
        self.running -= 1

    @workflow.query
    def status(self) -> WaveStatus:
        return WaveStatus(self.args.name, self.args.concurrency, self.args.rate, list(self.rows), self.finished)
