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
from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.wave import WaveActivities
    from mailmove.base import search
    from mailmove.base.model import MoveResult, RowPage, RowProgress, WaveInput, WaveRow, WaveStatus
    from mailmove.base.vocabulary import Kind, RowState
    from workflows import policy
    from workflows.domain_move import DomainMoveWorkflow
    from workflows.migration import error_text
    from workflows.server_move import ServerMoveWorkflow

PAGE = 100  # rows a page: one activity result stays far below Temporal's payload limits


TIMER_RESOLUTION = timedelta(seconds=1)  # the server fires shorter timers after about this long


class Pace:
    """One start per `spacing`, timed against the workflow's clock. At one a second or slower,
    every wait is slept, so two starts are never closer than `spacing`. Faster, a wait shorter
    than the timers' resolution is not slept (several rows start in one workflow task) and the
    rate holds on average over each second. Time spent waiting on the concurrency earns no
    credit, so there is never a burst above the rate."""

    def __init__(self, spacing: timedelta):
        self.spacing = spacing
        self.at = workflow.now()

    async def next(self) -> None:
        now = workflow.now()
        wait = self.at - now
        # waves started before "pace-every-wait" skipped short waits at any rate, and replay so
        if wait >= TIMER_RESOLUTION or (
            wait > timedelta(0) and self.spacing >= TIMER_RESOLUTION and workflow.patched("pace-every-wait")
        ):
            await workflow.sleep(wait)
            now = workflow.now()
        self.at = max(self.at, now) + self.spacing


@workflow.defn
class WaveWorkflow:
    @workflow.init
    def __init__(self, args: WaveInput) -> None:
        self.args = args
        self.rows: list[RowProgress] = []
        self.running = 0
        self.finished = False

    @workflow.run
    async def run(self, args: WaveInput) -> dict[str, int]:
        rows = await self.load(args)
        self.rows = [RowProgress(r.line, r.kind, r.subject, r.workflow_id) for r in rows]
        pace = Pace(timedelta(seconds=60 / args.rate))
        moves = []
        for row, progress in zip(rows, self.rows, strict=True):
            await workflow.wait_condition(lambda: self.running < args.concurrency)
            await pace.next()
            self.running += 1
            # a task a row, not awaited here: at a high rate one workflow task starts many rows
            moves.append(asyncio.create_task(self.move(row, progress)))
        await asyncio.gather(*moves)
        self.finished = True
        return self.status().counts()

    async def load(self, args: WaveInput) -> list[WaveRow]:
        rows: list[WaveRow] = []
        while len(rows) < args.total:
            page = await workflow.execute_activity_method(
                WaveActivities.wave_rows,
                RowPage(args.batch, rows[-1].line if rows else 0, PAGE),
                start_to_close_timeout=policy.AUDIT_TIMEOUT,
                retry_policy=policy.PERSISTENT_RETRY,
            )
            if not page:
                raise ApplicationError(
                    f"the store holds {len(rows)} of the wave's {args.total} rows", non_retryable=True
                )
            rows += page
        return rows

    async def move(self, row: WaveRow, progress: RowProgress) -> None:
        """Start one row's move and follow it to its end. No `finally`: a workflow evicted from
        a worker's cache must not touch workflow APIs on the way out."""
        run = DomainMoveWorkflow.run if row.kind == Kind.DOMAIN else ServerMoveWorkflow.run
        issued = workflow.now()  # the paced moment: the start's confirmation may come tasks later
        try:
            handle = await workflow.start_child_workflow(
                run,
                row.domain_move if row.kind == Kind.DOMAIN else row.server_move,
                id=row.workflow_id,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=search.at_start(row.kind, row.subject),
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                task_timeout=policy.MOVE_TASK_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            progress.state, progress.message = RowState.REFUSED, f"{row.subject} is already moving ({row.workflow_id})"
            self.running -= 1
            return
        progress.state, progress.started = RowState.RUNNING, issued
        try:
            result: MoveResult = await handle
            state, message = result.state.value, result.message
        except ChildWorkflowError as err:
            state, message = RowState.FAILED, error_text(err)
        progress.state, progress.message, progress.ended = state, message, workflow.now()
        self.running -= 1

    @workflow.query
    def status(self) -> WaveStatus:
        a = self.args
        return WaveStatus(a.name, a.total, a.concurrency, a.rate, list(self.rows), self.finished)
