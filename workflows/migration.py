"""What every migration workflow shares: stages, human actions, durable waits, the audit trail.

A subclass names its stages and runs them; this base gives it the stage bookkeeping, the
`confirm`/`extend`/`cancel` updates (inherited as Temporal handlers), activities that a cancel
interrupts, waits for a person with reminders and escalation (never a silent time-out), and a
transition record for every change, written to the search attributes and the database.
A failed stage never fails silently: it waits, "needs attention", for a retry confirm or a cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from temporalio import exceptions, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from activities.check import CheckActivities, StoredReport
    from activities.guard import GuardActivities
    from activities.heartbeat import WORKER_SHUTDOWN
    from activities.notify import NotifyActivities
    from activities.portal import PortalActivities
    from mailmove.base import hints, search
    from mailmove.base.errors import rejection
    from mailmove.base.guard import GuardInput
    from mailmove.base.model import (
        CancelInput,
        ConfirmInput,
        ExtendInput,
        MoveResult,
        MoveStatus,
        Notice,
        PortalFiling,
        PortalReceipt,
        StageStatus,
        Timings,
        Transition,
    )
    from mailmove.base.report import Report
    from mailmove.base.vocabulary import ENDED, Action, Event, Kind, MoveState, PortalMode, Stage, StageState, Verdict
    from workflows import policy
    from workflows.detection import Detection, Source, portal_reading


class Cancelled(Exception):
    """Raised inside the run when a cancel was accepted; the run compensates."""


def error_text(err: BaseException) -> str:
    """The innermost cause of an activity's or a child workflow's failure: what a person reads."""
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def findings(checks: list) -> str:
    """Check results as one line each: what was found, and the fix."""
    return "; ".join(f"{c.summary}: {c.fix}" if c.fix else c.summary for c in checks)


def lost_to_outage(err: ActivityError) -> bool:
    """Whether an activity's whole schedule-to-close bound passed without an attempt failing for
    a reason of its own: none was taken (no worker polled), or each one taken was lost with its
    worker (a timeout, a hand-back at shutdown)."""
    timeout = err.cause
    bounds = (TimeoutType.SCHEDULE_TO_CLOSE, TimeoutType.SCHEDULE_TO_START)  # the server's name when none started
    if not isinstance(timeout, exceptions.TimeoutError) or timeout.type not in bounds:
        return False
    last = timeout.cause
    return (
        last is None
        or isinstance(last, exceptions.TimeoutError)
        or (isinstance(last, ApplicationError) and last.type == WORKER_SHUTDOWN)
    )


class Migration:
    """Base of DomainMoveWorkflow and ServerMoveWorkflow (not a workflow by itself)."""

    KIND: ClassVar[Kind]
    STAGES: ClassVar[tuple[Stage, ...]]
    # From this stage on a cancel could no longer be undone, so it is refused.
    NO_RETURN: ClassVar[Stage]

    def setup(self, subject: str, timings: Timings, portal_mode: str, contact: str = "") -> None:
        self.subject = subject
        self.contact = contact
        self.timings = timings
        self.portal_mode = portal_mode
        self.form: dict[str, str] = {}  # values a person files by hand, while they are waited for
        self.receipts: dict[str, PortalReceipt] = {}  # by request kind
        self.stages = {name: StageStatus(name) for name in self.STAGES}
        self.stage = self.STAGES[0]
        self.state = MoveState.RUNNING
        self.attention = False
        self.awaiting: set[str] = set()  # stages that a confirm would release now
        self.confirmed: dict[str, ConfirmInput] = {}
        self.cancel_request: CancelInput | None = None
        self.compensating = False
        self.escalate_at: datetime | None = None
        self.wakeup = False
        self.alerts: list[str] = []
        self.message = ""
        self.events = 0
        self.visible: tuple[str, str] = search.STARTED  # (stage, state) last set as search attributes
        self.heartbeat_timeout = policy.seconds(timings.heartbeat_timeout)
        self.portal_timeout = policy.seconds(timings.portal_timeout)
        self.checks: dict[str, str] = {}  # stage -> summary of the check report stored there
        self.detection = Detection(timings)
        self.mailing: list[asyncio.Task[None]] = []  # mails to the contact on their way ("notify-apart")

    async def drive(self, stages: list[Callable[[], Awaitable[None]]]) -> MoveResult:
        """Run the stages in order. A cancel accepted on the way compensates; a hard error (a
        preflight problem) fails the move with its message."""
        try:
            for stage in stages:
                await stage()
            result = MoveResult(MoveState.DONE, self.message)
        except Cancelled:
            await self.compensate()
            result = MoveResult(MoveState.CANCELLED, self.message)
        except asyncio.CancelledError:
            # cancelled through Temporal itself (`temporal workflow cancel`): the same compensation
            if self.cancellable():
                await self.compensate()
            raise
        except ApplicationError as err:
            await self.fail(err)
            await self.posted()
            raise
        await self.posted()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def compensate(self) -> None:
        """Undo what the move did so far (after `mark_cancelled`)."""
        raise NotImplementedError

    def cancel_outcome(self) -> str:
        """What a cancel accepted now will do (the answer to the `cancel` update)."""
        raise NotImplementedError

    def past_return(self) -> str:
        """Why a cancel is refused from `NO_RETURN` on."""
        raise NotImplementedError

    # -- human actions ----------------------------------------------------------------------

    @workflow.update
    async def confirm(self, request: ConfirmInput) -> str:
        self.confirmed[request.stage] = request
        self.awaiting.discard(request.stage)
        answer = self.confirm_answer(request)
        result = f"{request.stage} confirmed" if answer is None else f"{request.stage}: checking again now"
        detail = request.note + (f" (accepted as lost: {', '.join(request.lost)})" if request.lost else "")
        await self.transition(
            self.state, Action.CONFIRM, actor=request.actor, detail=detail.strip(), stage=request.stage, result=result
        )
        return result if answer is None else await answer

    @confirm.validator
    def _check_confirm(self, request: ConfirmInput) -> None:
        if request.stage not in self.STAGES:
            raise rejection("stage", f"{request.stage!r} is not a stage (stages: {', '.join(self.STAGES)})")
        if request.stage not in self.awaiting:
            waiting = ", ".join(sorted(self.awaiting)) or "none"
            raise rejection("stage", f"{request.stage} is not waiting for a confirm (waiting: {waiting})")
        self.check_confirm(request)

    def check_confirm(self, request: ConfirmInput) -> None:
        """What a kind of move demands of a confirm beyond a waiting stage (a `rejection` if unmet)."""

    def confirm_answer(self, request: ConfirmInput) -> Awaitable[str] | None:
        """The answer to a confirm that makes the run check something again at once (it comes
        when that check has a result), or None: "confirmed", at once. Called before the confirm's
        first command, so that a patch it asks about is recorded in order."""
        return None

    @workflow.update
    async def extend(self, request: ExtendInput) -> str:
        self.escalate_at = max(self.escalate_at, workflow.now()) + timedelta(seconds=request.seconds)
        self.stages[self.stage].eta = self.escalate_at
        self.attention = False
        self.state = MoveState.WAITING
        self.wakeup = True
        result = f"the wait now escalates at {self.escalate_at.isoformat()}"
        await self.transition(
            self.state,
            Action.EXTEND,
            actor=request.actor,
            detail=f"+{request.seconds:g}s {request.note}".strip(),
            result=result,
        )
        return result

    @extend.validator
    def _check_extend(self, request: ExtendInput) -> None:
        if self.escalate_at is None:
            raise rejection("stage", f"{self.stage} has no wait to extend")
        if request.seconds <= 0:
            raise rejection("seconds", "must be more than 0")

    @workflow.update
    async def cancel(self, request: CancelInput) -> str:
        self.cancel_request = request
        result = self.cancel_outcome()
        await self.transition(
            MoveState.CANCELLING, Action.CANCEL, actor=request.actor, detail=request.note, result=result
        )
        return result

    @cancel.validator
    def _check_cancel(self, request: CancelInput) -> None:
        if self.cancel_request is not None or self.state in ENDED:
            raise rejection("state", f"the move is already {self.state.value}")
        if not self.cancellable():
            raise rejection("stage", self.past_return())

    @workflow.query
    def status(self) -> MoveStatus:
        return MoveStatus(
            workflow_id=workflow.info().workflow_id,
            kind=self.KIND,
            subject=self.subject,
            state=self.state,
            stage=self.stage,
            attention=self.attention,
            stages=[replace(s) for s in self.stages.values()],
            form=dict(self.form),
            alerts=list(self.alerts),
            message=self.message,
            checks=dict(self.checks),
            **self.details(),
        )

    def details(self) -> dict[str, Any]:
        """The status fields of this kind of move."""
        raise NotImplementedError

    def cancellable(self) -> bool:
        return self.STAGES.index(self.stage) < self.STAGES.index(self.NO_RETURN)

    # -- running stages ---------------------------------------------------------------------

    async def check(self, stage: str, method: Callable, query: Any) -> Report | None:
        """Run `mailmove check` as an activity and store its report under this move and `stage`.

        None for a move started before checks existed: its history has no such activities.
        """
        if not workflow.patched("check-reports"):
            return None
        timeout = policy.seconds(self.timings.check_timeout)
        report = await self.act(method, query, timeout)
        stored = StoredReport(workflow.info().workflow_id, stage, report)
        await self.act(CheckActivities.store_report, stored, timeout)
        self.checks[stage] = report.summary()
        return report

    async def complete(self, method: Callable, query: Any) -> None:
        """The `done` stage after `self.message` says what was achieved: the final check (stored
        and summed up; it informs, the move is finished either way), the record, the contact told."""
        try:
            report = await self.check(Stage.DONE, method, query)
        except ActivityError as err:
            self.message += f" The final check could not run: {error_text(err)}."
        else:
            if report is not None:
                problems = report.with_verdict(Verdict.ERROR, Verdict.WARNING)
                self.message += (
                    f" Final check: {report.summary()}" + (f" ({findings(problems)})" if problems else "") + "."
                )
        self.stages[Stage.DONE].state = StageState.DONE
        self.stages[Stage.DONE].ended = workflow.now()
        await self.transition(MoveState.DONE, Action.DONE, detail=self.message)
        await self.tell(Event.DONE, Stage.DONE, self.message)
        await self.guard()

    async def guard(self) -> None:
        """The schedule of the move's guard (docs/operations.md), made once. A failure is an alert,
        never the move's: `mailmove guard adopt` makes it later, as for moves done before
        "guard-schedule"."""
        if not workflow.patched("guard-schedule"):
            return
        try:
            await self.act(GuardActivities.ensure_schedule, self.guard_input(), policy.SCHEDULE_TIMEOUT)
        except ActivityError as err:
            self.alerts.append(f"the guard was not scheduled: {error_text(err)}; `mailmove guard adopt` makes it")

    def guard_input(self) -> GuardInput:
        """What this move's guard checks, from its input."""
        raise NotImplementedError

    def interrupted(self) -> bool:
        return self.cancel_request is not None and not self.compensating

    async def act(
        self,
        method: Callable,
        arg: Any,
        timeout: timedelta,
        task_queue: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Run one activity; a cancel accepted meanwhile interrupts it. Compensation is never
        interrupted and retries until it succeeds.

        Every activity run here beats (activities/heartbeat.py): an attempt lost with its worker
        is retried after the heartbeat timeout, and attempts are not counted; a stage gives up
        on a non-retryable error or after `timing.retry_limit` (one whole attempt always fits).
        `retry` replaces the retry policy (policy.ONE_ATTEMPT for a check a person waits for)."""
        options = policy.stage_activity(timeout, self.timings)
        if self.compensating:
            options.update(schedule_to_close_timeout=None, retry_policy=policy.PERSISTENT_RETRY)
        if retry:
            options["retry_policy"] = retry
        while True:
            handle = workflow.start_activity_method(
                method,
                arg,
                task_queue=task_queue,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **options,
            )
            await workflow.wait_condition(lambda h=handle: h.done() or self.interrupted())
            if not handle.done():
                # wait until it has really stopped: compensation must not race a running effect
                handle.cancel()
                try:
                    await handle
                except (ActivityError, asyncio.CancelledError):
                    pass
                raise Cancelled()
            try:
                return handle.result()
            except ActivityError as err:
                if not lost_to_outage(err):
                    raise
                # the bound passed with no worker finishing an attempt and none failing it for a
                # reason: an outage (no worker, no server), not the move's error; asked again

    async def attempt(self, stage: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a stage's activity; when it fails for good, wait for a retry confirm or a cancel."""
        while True:
            try:
                return await call()
            except ActivityError as err:
                if self.compensating:  # only a non-retryable error gets here
                    raise ApplicationError(f"cancel: undoing the move failed: {error_text(err)}") from err
                await self.needs_retry(stage, error_text(err))

    async def file(self, stage: str, kind: str, subject: str, values: dict[str, str], form: str) -> str:
        """One request to the centre: over HTTP, filed once whatever the retries (idempotency
        key from the workflow), or as a form for a person, with the exact values, and a confirm."""
        if self.portal_mode == PortalMode.HTTP:
            filing = PortalFiling(str(workflow.uuid4()), workflow.info().workflow_id, kind, subject, values)
            receipt = await self.attempt(
                stage, lambda: self.act(PortalActivities.file_request, filing, self.portal_timeout)
            )
            self.receipts[kind] = receipt
            return f"filed at the portal as {receipt.reference} ({receipt.status})"
        self.form = {"form": form, **values}
        shown = "; ".join(f"{k} = {v}" for k, v in values.items())
        await self.wait_confirm(
            stage, f"file at {form} with: {shown}; then `{hints.confirm(workflow.info().workflow_id, stage)}`"
        )
        self.form = {}
        return "filed by hand: " + self.confirmed[stage].note

    async def portal_confirmed(self, kind: str) -> str:
        """How the portal confirmed the request of `kind` filed here, or "" (not yet, or none
        filed): the sequential detection of moves begun before "detect-apart"."""
        receipt = self.receipts.get(kind)
        if receipt is None:
            return ""
        state = await self.act(
            PortalActivities.request_status, receipt, self.portal_timeout, retry=policy.SEQUENTIAL_DETECT_RETRY
        )
        return portal_reading(receipt)(state)

    def portal_source(self, receipt: PortalReceipt) -> Source:
        """The portal's status of a request filed here, as a detection source."""
        return self.detection.source(
            "portal", PortalActivities.request_status, receipt, self.timings.portal_timeout, portal_reading(receipt)
        )

    async def detect_round(self, stage: str, sources: list[Source]) -> str:
        """One round of detection while `stage` waits (workflows/detection.py): a confirm or a
        cancel ends it at once; what a failed source said is the stage's last error."""
        how, failed = await self.detection.round(sources, lambda: stage in self.confirmed or self.interrupted())
        if failed:
            self.stages[stage].last_error = "; ".join(f"{name}: {error_text(err)}" for name, err in failed)
        return how

    async def needs_retry(self, stage: str, error: str) -> None:
        """The stage failed for good: it waits, needing attention, for a retry confirm or a cancel."""
        status = self.stages[stage]
        status.attempts += 1
        status.last_error = error
        status.state = StageState.WAITING
        status.waiting_for = f"a postmaster to fix the cause and retry (`{hints.confirm(workflow.info().workflow_id, stage)}`), or cancel"
        await self.escalate(f"{stage} failed: {error}")
        await self.wait_confirm(stage, status.waiting_for)
        self.attention = False
        status.state = StageState.RUNNING
        status.waiting_for = ""
        self.state = MoveState.RUNNING

    async def wait_confirm(self, stage: str, waiting_for: str) -> None:
        self.confirmed.pop(stage, None)
        self.awaiting.add(stage)
        status = self.stages[stage]
        status.state = StageState.WAITING
        status.waiting_for = waiting_for
        if not self.attention:
            await self.transition(MoveState.WAITING, Action.WAITING, detail=waiting_for)
            await self.tell(Event.WAITING, stage, waiting_for)
        await self.pause(None, until=lambda: stage in self.confirmed)

    async def wait_person(
        self,
        stage: str,
        waiting_for: str,
        detect: Callable[[], Awaitable[str]] | None = None,
        overdue: str = "still waiting",
    ) -> str:
        """Until a confirm (or `detect` returns how it was detected); returns how it ended.

        `detect` runs every `probe_interval`, reminders every `reminder_interval`; after
        `escalate_after` the move needs attention and keeps waiting, extendable.
        """
        t = self.timings
        now = workflow.now()
        self.escalate_at = now + timedelta(seconds=t.escalate_after)
        next_reminder = now + timedelta(seconds=t.reminder_interval)
        next_probe = now if detect else None
        self.confirmed.pop(stage, None)
        self.awaiting.add(stage)
        status = self.stages[stage]
        status.state = StageState.WAITING
        status.waiting_for = waiting_for
        status.eta = self.escalate_at
        await self.transition(MoveState.WAITING, Action.WAITING, detail=waiting_for)
        await self.tell(Event.WAITING, stage, waiting_for)
        how = ""
        while not how:
            if stage in self.confirmed:
                how = f"confirmed by {self.confirmed[stage].actor}: {self.confirmed[stage].note}".rstrip(": ")
                break
            now = workflow.now()
            if next_probe is not None and now >= next_probe:
                next_probe = now + timedelta(seconds=t.probe_interval)
                status.attempts += 1
                how = await detect()
                if how:
                    break
            if now >= next_reminder:
                next_reminder = now + timedelta(seconds=t.reminder_interval)
                await self.transition(self.state, Action.REMINDER, detail=status.waiting_for)
            if now >= self.escalate_at and not self.attention:
                await self.escalate(f"{stage}: {overdue} after {t.escalate_after / 86400:g} days")
            wake = min(w for w in (next_probe, next_reminder, None if self.attention else self.escalate_at) if w)
            await self.pause((wake - workflow.now()).total_seconds(), until=lambda: stage in self.confirmed)
        self.awaiting.discard(stage)
        self.escalate_at = None
        self.attention = False
        return how

    async def pause(self, seconds: float | None, until: Callable[[], bool] = lambda: False) -> None:
        """A durable wait that a cancel, an extend or `until` cuts short."""
        try:
            await workflow.wait_condition(
                lambda: self.interrupted() or self.wakeup or until(),
                timeout=None if seconds is None else max(seconds, 0.001),
            )
        except TimeoutError:
            pass
        self.wakeup = False
        if self.interrupted():
            raise Cancelled()

    async def escalate(self, why: str) -> None:
        self.attention = True
        if why not in self.alerts:
            self.alerts.append(why)
        await self.transition(MoveState.NEEDS_ATTENTION, Action.ESCALATED, detail=why, result="needs attention")
        await self.tell(Event.OVERDUE, self.stage, why)

    async def tell(self, event: Event, stage: str, text: str) -> None:
        """E-mail the move's contact (a person's step waiting, overdue, the move done). A mail
        that cannot be sent is an alert on the move, never its failure. It goes beside the move
        ("notify-apart"): a relay that is down costs its retries (up to `timing.retry_limit`) to
        the mail alone, while a confirm, a cancel and the stages go on; the move ends once its
        mails have (`posted`)."""
        if not self.contact or not workflow.patched("notifications"):
            return
        wid = workflow.info().workflow_id
        subject = {
            Event.WAITING: f"[mailmove] {self.subject}: {stage} waits for you",
            Event.OVERDUE: f"[mailmove] {self.subject} needs attention at {stage}",
            Event.DONE: f"[mailmove] {self.subject}: the move is done",
        }[event]
        body = f"{text}\n\nMove {wid}, stage {stage}.\n"
        if event != Event.DONE:
            body += f"Confirm when it is done: {hints.confirm(wid, stage)}\nShow it: {hints.show(wid)}\n"
        notice = Notice(str(workflow.uuid4()), wid, event, self.contact, subject, body)
        if workflow.patched("notify-apart"):
            self.mailing.append(asyncio.create_task(self.mail(notice)))
        else:
            await self.mail(notice)

    async def mail(self, notice: Notice) -> None:
        try:
            await workflow.execute_activity_method(
                NotifyActivities.send_notice, notice, **policy.stage_activity(policy.NOTIFY_TIMEOUT, self.timings)
            )
        except ActivityError as err:
            self.alerts.append(f"the {notice.event} mail to {notice.to} was not sent: {error_text(err)}")

    async def posted(self) -> None:
        """Until every mail begun is sent or given up: a workflow that ends leaves its activities."""
        await asyncio.gather(*self.mailing)

    async def begin(self, stage: str) -> None:
        self.stage = stage
        status = self.stages[stage]
        status.state = StageState.RUNNING
        status.started = workflow.now()
        await self.transition(MoveState.RUNNING, Action.STAGE_STARTED)

    async def end(self, stage: str, detail: str = "") -> None:
        status = self.stages[stage]
        status.state = StageState.DONE
        status.ended = workflow.now()
        status.waiting_for = ""
        status.detail = detail or status.detail
        await self.transition(MoveState.RUNNING, Action.STAGE_DONE, detail=status.detail, result="done")

    async def skip(self, stage: str, reason: str) -> None:
        self.stage = stage
        status = self.stages[stage]
        status.state = StageState.SKIPPED
        status.started = status.ended = workflow.now()
        status.detail = reason
        await self.transition(MoveState.RUNNING, Action.STAGE_SKIPPED, detail=reason, result="skipped")

    async def fail(self, err: ApplicationError) -> None:
        """A hard error (preflight): the stage and the move fail, with the message to act on."""
        status = self.stages[self.stage]
        status.state = StageState.FAILED
        status.last_error = str(err)
        status.ended = workflow.now()
        await self.transition(MoveState.FAILED, Action.FAILED, detail=str(err), result="failed")
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def mark_cancelled(self) -> str:
        """Every open stage ends as cancelled; returns who cancelled."""
        actor = self.cancel_request.actor if self.cancel_request else "temporal"
        self.compensating = True
        self.state = MoveState.CANCELLING
        for status in self.stages.values():
            if status.state in (StageState.PENDING, StageState.RUNNING, StageState.WAITING):
                if status.state != StageState.PENDING:
                    status.detail = f"cancelled by {actor}"
                status.state = StageState.SKIPPED if status.state == StageState.PENDING else StageState.FAILED
                status.waiting_for = ""
                status.ended = status.ended or workflow.now()
        self.awaiting.clear()
        self.attention = False
        return actor

    async def transition(
        self,
        state: MoveState,
        action: Action,
        *,
        actor: str = "mailmove",
        detail: str = "",
        stage: str = "",
        result: str = "",
    ) -> None:
        """Make the new state visible: search attributes, then the audit trail in the database."""
        if self.state == MoveState.CANCELLING and state != MoveState.CANCELLED:
            state = MoveState.CANCELLING
        elif self.attention and state in (MoveState.RUNNING, MoveState.WAITING):
            state = MoveState.NEEDS_ATTENTION
        self.state = state
        visible = (self.stage, self.state.value)
        # each upsert costs the server a visibility write (bench/wave), so only the state is an
        # attribute, set when it changes (5 writes a move, not 11); moves started before
        # "state-attribute" replay with the stage too, before "quiet-upserts" at every transition
        if workflow.patched("state-attribute"):
            if visible[1] != self.visible[1]:
                workflow.upsert_search_attributes([search.STATE.value_set(visible[1])])
                self.visible = visible
        elif visible != self.visible or not workflow.patched("quiet-upserts"):
            workflow.upsert_search_attributes([search.STAGE.value_set(visible[0]), search.STATE.value_set(visible[1])])
            self.visible = visible
        self.events += 1
        transition = Transition(
            event_id=str(workflow.uuid4()),
            seq=self.events,
            workflow_id=workflow.info().workflow_id,
            kind=self.KIND,
            subject=self.subject,
            at=workflow.now(),
            stage=stage or self.stage,
            state=self.state.value,
            action=action,
            actor=actor,
            detail=detail,
            result=result,
            attention=self.attention,
        )
        await workflow.execute_activity_method(
            AuditActivities.record_transition,
            transition,
            start_to_close_timeout=policy.AUDIT_TIMEOUT,
            retry_policy=policy.PERSISTENT_RETRY,
        )
