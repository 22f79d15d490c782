"""DomainMoveWorkflow: a mail domain moves behind the central gateway without a bounce.

Stages (DESIGN.md): preflight, add_gateway_mx, request_domain, await_registration,
remove_legacy_mx, await_propagation, done. Waits of minutes to days are durable timers and
updates here; every effect is an activity. A failed stage never fails silently: it waits,
marked "needs attention", for a postmaster to retry it (`confirm STAGE`) or to cancel.
Cancel before `remove_legacy_mx` restores the MX set recorded in preflight, verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities
    from activities.dns import DnsActivities
    from activities.portal import PortalActivities
    from activities.smtp_probe import ProbeActivities
    from workflows import policy, search
    from workflows.model import (
        DOMAIN_STAGES,
        CancelInput,
        ConfirmInput,
        ConvergenceQuery,
        ConvergenceReport,
        DomainMoveInput,
        ExtendInput,
        HostQuery,
        MoveResult,
        MoveState,
        MoveStatus,
        MxChange,
        MxRecord,
        PortalFiling,
        PortalReceipt,
        ProbeQuery,
        ProbeResult,
        ResolverQuery,
        ResolverView,
        ServerView,
        StageState,
        StageStatus,
        Transition,
        ZoneQuery,
        ZoneSnapshot,
        mx_key,
    )

KIND = "domain"
# From this stage on a cancel would not restore the legacy MX, so it is refused.
NO_RETURN = DOMAIN_STAGES.index("remove_legacy_mx")
DEFAULT_TTL = 3600  # TTL for new MX records when the domain had none


class _Cancelled(Exception):
    """Raised inside the run when a cancel was accepted; the run compensates."""


def _error_text(err: BaseException) -> str:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err) or type(err).__name__


def _mx_text(records: list[MxRecord]) -> str:
    return ", ".join(str(r) for r in mx_key(records)) or "no MX"


@workflow.defn
class DomainMoveWorkflow:
    @workflow.init
    def __init__(self, args: DomainMoveInput) -> None:
        self.args = args
        self.stages = {name: StageStatus(name) for name in DOMAIN_STAGES}
        self.stage = DOMAIN_STAGES[0]
        self.state = MoveState.RUNNING
        self.attention = False
        self.snapshot: ZoneSnapshot | None = None
        gateway = [MxRecord(args.gateway_preference, host) for host in args.gateway_mx]
        self.with_legacy = list(mx_key(gateway + [MxRecord(args.legacy_preference, args.legacy_mx)]))
        self.final = list(mx_key(gateway))
        self.awaiting: set[str] = set()  # stages that a confirm would release now
        self.confirmed: dict[str, ConfirmInput] = {}
        self.cancel_request: CancelInput | None = None
        self.compensating = False
        self.escalate_at: datetime | None = None
        self.wakeup = False
        self.eta: datetime | None = None
        self.records_to_set: list[str] = []
        self.form: dict[str, str] = {}
        self.alerts: list[str] = []
        self.resolvers: list[ResolverView] = []
        self.authoritative: list[ServerView] = []
        self.message = ""
        self.receipt: PortalReceipt | None = None
        self.events = 0
        self.dns_timeout = policy.seconds(args.timings.dns_timeout)
        self.portal_timeout = policy.seconds(args.timings.portal_timeout)
        self.probe_timeout = policy.seconds(args.timings.probe_timeout)
        self.heartbeat_timeout = policy.seconds(args.timings.heartbeat_timeout)

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, args: DomainMoveInput) -> MoveResult:
        try:
            await self.preflight()
            await self.change_mx("add_gateway_mx", self.with_legacy, [self.snapshot.mx])
            await self.request_domain()
            await self.await_registration()
            await self.change_mx("remove_legacy_mx", self.final, [self.with_legacy])
            await self.await_propagation()
            await self.finish()
            result = MoveResult(MoveState.DONE, self.message)
        except _Cancelled:
            await self.compensate()
            result = MoveResult(MoveState.CANCELLED, self.message)
        except asyncio.CancelledError:
            # cancelled through Temporal itself (`temporal workflow cancel`): same compensation
            if DOMAIN_STAGES.index(self.stage) < NO_RETURN:
                await self.compensate()
            raise
        except ApplicationError as err:
            self.stages[self.stage].state = StageState.FAILED
            self.stages[self.stage].last_error = str(err)
            self.stages[self.stage].ended = workflow.now()
            await self.transition(MoveState.FAILED, "failed", detail=str(err), result="failed")
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def preflight(self) -> None:
        await self.begin("preflight")
        try:
            self.snapshot = await self.act(DnsActivities.inspect_zone, ZoneQuery(self.args.domain), self.dns_timeout)
            legacy = await self.act(DnsActivities.host_addresses, HostQuery(self.args.legacy_mx), self.dns_timeout)
        except ActivityError as err:
            raise ApplicationError(f"preflight: {_error_text(err)}", non_retryable=True) from err
        if self.args.legacy_mx in self.args.gateway_mx:
            raise ApplicationError("preflight: the legacy MX is one of the gateway hosts", non_retryable=True)
        if mx_key(self.snapshot.mx) == mx_key(self.final):
            raise ApplicationError(f"preflight: {self.args.domain} is already behind the gateway", non_retryable=True)
        self.message = (
            f"zone {self.snapshot.zone}, serial {self.snapshot.serial}; current MX: {_mx_text(self.snapshot.mx)} "
            f"(TTL {self.snapshot.mx_ttl}s); legacy host {self.args.legacy_mx} has {', '.join(legacy.addresses)}"
        )
        await self.end("preflight", detail=self.message)

    async def change_mx(self, stage: str, target: list[MxRecord], accept: list[list[MxRecord]]) -> None:
        await self.begin(stage)
        ttl = self.snapshot.mx_ttl or DEFAULT_TTL
        if self.args.dns_mode == "rfc2136":
            change = MxChange(self.args.domain, self.snapshot.zone, target, accept, ttl)
            result = await self.attempt(stage, lambda: self.act(DnsActivities.apply_mx, change, self.dns_timeout))
            self.stages[stage].detail = (
                f"UPDATE sent, serial {result.serial}"
                if result.changed
                else "the primary already served the target set"
            )
        await self.converge(self.stages[stage], accept[0], target)
        replaced_ttl = (self.snapshot.mx_ttl or self.snapshot.negative_ttl) if stage == "add_gateway_mx" else ttl
        self.eta = workflow.now() + timedelta(seconds=replaced_ttl)
        self.stages[stage].eta = self.eta
        await self.end(stage, detail=f"every authoritative server serves {_mx_text(target)}")

    async def converge(self, status: StageStatus, current: list[MxRecord], target: list[MxRecord]) -> None:
        """Until every authoritative address serves exactly `target`; the caller's T_conv is now.

        In centre mode a person makes the change from `current`: the status shows the lines.
        """
        t = self.args.timings
        centre = self.args.dns_mode == "centre"
        stage = status.name
        if centre:
            self.records_to_set = _records_to_set(self.args.domain, current, target, self.snapshot.mx_ttl)
        # a person may take days; an automatic update that does not show within an hour is news
        escalate_after = t.escalate_after if centre else t.convergence_escalate_after
        # one quick round first, so that a lagging server shows in the status at once
        query = ConvergenceQuery(
            self.args.domain, self.snapshot.zone, self.snapshot.authoritative, target, window=0, poll=t.convergence_poll
        )
        window = min(t.convergence_window, 10.0) if centre else t.convergence_window
        started = workflow.now()
        while True:
            report: ConvergenceReport = await self.attempt(
                stage,
                lambda q=query: self.act(
                    DnsActivities.poll_authoritative, q, policy.polling_timeout(q.window), heartbeat=True
                ),
            )
            self.authoritative = report.servers
            if report.converged:
                status.waiting_for = ""
                self.records_to_set = []
                if status.state == StageState.WAITING:
                    status.state = StageState.RUNNING
                return
            lagging = ", ".join(f"{v.address} ({v.error or _mx_text(v.mx)})" for v in report.servers if not v.ok)
            status.attempts += 1
            status.waiting_for = (
                f"the centre to set the MX records listed below; not yet served by {lagging}"
                if centre
                else f"authoritative servers to serve the new set: {lagging}"
            )
            if status.state != StageState.WAITING:
                status.state = StageState.WAITING
                await self.transition(MoveState.WAITING, "waiting", detail=status.waiting_for)
            if workflow.now() - started >= timedelta(seconds=escalate_after) and not self.attention:
                await self.escalate(f"{stage}: authoritative servers still disagree after {escalate_after:g}s")
            if query.window > 0:  # after the quick first round, straight into a full window
                await self.pause(t.centre_poll if centre else t.convergence_pause)
            query = replace(query, window=window)

    async def request_domain(self) -> None:
        stage = "request_domain"
        await self.begin(stage)
        values = {"domain": self.args.domain_display or self.args.domain, "mx": ", ".join(self.args.gateway_mx)}
        if self.args.portal_mode == "http":
            filing = PortalFiling(str(workflow.uuid4()), workflow.info().workflow_id, KIND, self.args.domain, values)
            self.receipt = await self.attempt(
                stage, lambda: self.act(PortalActivities.file_request, filing, self.portal_timeout)
            )
            await self.end(stage, detail=f"filed at the portal as {self.receipt.reference} ({self.receipt.status})")
            return
        self.form = {"form": self.args.portal_form, **values}
        await self.wait_confirm(stage, f"file the domain at {self.args.portal_form} with: domain = {values['domain']}")
        self.form = {}
        await self.end(stage, detail="filed by hand: " + self.confirmed[stage].note)

    async def await_registration(self) -> None:
        """Until confirmed (a postmaster, the portal, or the gateway MX accepting mail for the domain).

        Reminders every `reminder_interval`; after `escalate_after` the move needs attention and
        keeps waiting, extendable; never a silent time-out.
        """
        stage = "await_registration"
        t = self.args.timings
        await self.begin(stage)
        now = workflow.now()
        self.escalate_at = now + timedelta(seconds=t.escalate_after)
        next_reminder = now + timedelta(seconds=t.reminder_interval)
        next_probe = now
        rcpt = f"postmaster@{self.args.domain}"
        self.awaiting.add(stage)
        status = self.stages[stage]
        status.state = StageState.WAITING
        status.waiting_for = (
            f"the centre's confirmation that {self.args.domain} is registered at the centre and at DFN "
            f"(`mailmove confirm {workflow.info().workflow_id} {stage}`), or the gateway MX accepting {rcpt}"
        )
        status.eta = self.escalate_at
        await self.transition(MoveState.WAITING, "waiting", detail=status.waiting_for)
        how = ""
        while not how:
            if stage in self.confirmed:
                how = f"confirmed by {self.confirmed[stage].actor}: {self.confirmed[stage].note}".rstrip(": ")
                break
            now = workflow.now()
            if now >= next_probe:
                next_probe = now + timedelta(seconds=t.probe_interval)
                how = await self.detect(rcpt)
                if how:
                    break
            if now >= next_reminder:
                next_reminder = now + timedelta(seconds=t.reminder_interval)
                await self.transition(self.state, "reminder", detail=status.waiting_for)
            if now >= self.escalate_at and not self.attention:
                await self.escalate(f"{stage}: no registration after {t.escalate_after / 86400:g} days")
            wake = min(next_probe, next_reminder, self.escalate_at if not self.attention else next_reminder)
            await self.pause((wake - workflow.now()).total_seconds(), until=lambda: stage in self.confirmed)
        self.awaiting.discard(stage)
        self.escalate_at = None
        self.attention = False
        await self.end(stage, detail=how)

    async def detect(self, rcpt: str) -> str:
        """One detection round; a failing probe is shown, not fatal: the wait goes on."""
        status = self.stages["await_registration"]
        status.attempts += 1
        try:
            if self.receipt is not None:
                portal = await self.act(PortalActivities.request_status, self.receipt, self.portal_timeout)
                if portal == "confirmed":
                    return f"the portal confirmed request {self.receipt.reference}"
            probe: ProbeResult = await self.act(
                ProbeActivities.probe_rcpt,
                ProbeQuery(self.args.gateway_mx, self.args.gateway_smtp_port, rcpt),
                self.probe_timeout,
            )
        except ActivityError as err:
            status.last_error = _error_text(err)
            return ""
        if probe.accepted:
            return f"{probe.host} accepts {rcpt} ({probe.code} {probe.message})"
        status.last_error = f"{probe.host} refuses {rcpt}: {probe.code} {probe.message}"
        return ""

    async def await_propagation(self) -> None:
        """Rule 2 of DESIGN.md: now >= T_conv + TTL_old; resolvers are evidence (rule 3)."""
        stage = "await_propagation"
        await self.begin(stage)
        eta: datetime = self.eta
        status = self.stages[stage]
        status.eta = eta
        status.state = StageState.WAITING
        status.waiting_for = f"resolvers to drop the old MX set; they may keep it until {eta.isoformat()}"
        await self.transition(MoveState.WAITING, "waiting", detail=status.waiting_for)
        await self.observe_resolvers()
        remaining = (eta - workflow.now()).total_seconds()
        if remaining > 0:
            await workflow.sleep(remaining)
        views = await self.observe_resolvers()
        stale = [v.resolver for v in views if not v.serves_target and not v.error]
        if stale:
            self.alerts.append(
                f"after the old TTL ran out, these resolvers still serve another MX set: {', '.join(stale)}"
            )
            await self.transition(self.state, "alert", detail=self.alerts[-1])
        await self.end(stage, detail=self.alerts[-1] if stale else "the old MX set has expired from every cache")

    async def observe_resolvers(self) -> list[ResolverView]:
        try:
            views = await self.act(
                DnsActivities.observe_resolvers, ResolverQuery(self.args.domain, self.final), self.dns_timeout
            )
        except ActivityError as err:
            self.stages[self.stage].last_error = _error_text(err)
            return []
        self.resolvers = views
        return views

    async def finish(self) -> None:
        await self.begin("done")
        await self.converge(self.stages["done"], self.final, self.final)
        self.eta = None
        self.message = (
            f"{self.args.domain} is behind the gateway ({_mx_text(self.final)}) and the old MX set has expired "
            f"from every cache: the old server {self.args.legacy_mx} may now be switched off."
        )
        self.stages["done"].state = StageState.DONE
        self.stages["done"].ended = workflow.now()
        await self.transition(MoveState.DONE, "done", detail=self.message)

    async def compensate(self) -> None:
        """Put back the MX set recorded in preflight, verified on every authoritative server."""
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
        if self.snapshot is None:
            self.message = "cancelled before anything was changed"
        else:
            original = self.snapshot.mx
            if self.args.dns_mode == "rfc2136":
                change = MxChange(
                    self.args.domain,
                    self.snapshot.zone,
                    original,
                    [self.with_legacy, original],
                    self.snapshot.mx_ttl or DEFAULT_TTL,
                )
                await self.act(DnsActivities.apply_mx, change, self.dns_timeout)
            await self.converge(StageStatus("restore"), self.with_legacy, original)
            self.records_to_set = []
            self.message = f"cancelled; the MX set is restored to {_mx_text(original)}"
        self.eta = None
        await self.transition(
            MoveState.CANCELLED,
            "cancelled",
            actor=actor,
            detail=self.message,
        )

    # -- human actions ----------------------------------------------------------------------

    @workflow.update
    async def confirm(self, request: ConfirmInput) -> str:
        self.confirmed[request.stage] = request
        self.awaiting.discard(request.stage)
        result = f"{request.stage} confirmed"
        await self.transition(
            self.state, "confirm", actor=request.actor, detail=request.note, stage=request.stage, result=result
        )
        return result

    @confirm.validator
    def _check_confirm(self, request: ConfirmInput) -> None:
        if request.stage not in DOMAIN_STAGES:
            raise ValueError(f"stage: {request.stage!r} is not a stage (stages: {', '.join(DOMAIN_STAGES)})")
        if request.stage not in self.awaiting:
            waiting = ", ".join(sorted(self.awaiting)) or "none"
            raise ValueError(f"stage: {request.stage} is not waiting for a confirm (waiting: {waiting})")

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
            "extend",
            actor=request.actor,
            detail=f"+{request.seconds:g}s {request.note}".strip(),
            result=result,
        )
        return result

    @extend.validator
    def _check_extend(self, request: ExtendInput) -> None:
        if self.escalate_at is None:
            raise ValueError(f"stage: {self.stage} has no wait to extend")
        if request.seconds <= 0:
            raise ValueError("seconds: must be more than 0")

    @workflow.update
    async def cancel(self, request: CancelInput) -> str:
        self.cancel_request = request
        if self.snapshot is None:
            result = "cancelled; nothing had been changed"
        else:
            result = f"cancelling: the MX set will be restored to {_mx_text(self.snapshot.mx)}"
        await self.transition(MoveState.CANCELLING, "cancel", actor=request.actor, detail=request.note, result=result)
        return result

    @cancel.validator
    def _check_cancel(self, request: CancelInput) -> None:
        if self.cancel_request is not None or self.state in (MoveState.CANCELLED, MoveState.DONE, MoveState.FAILED):
            raise ValueError(f"state: the move is already {self.state.value}")
        if DOMAIN_STAGES.index(self.stage) >= NO_RETURN:
            raise ValueError(
                f"stage: the legacy MX is already being removed ({self.stage}); a cancel would not restore it"
            )

    @workflow.query
    def status(self) -> MoveStatus:
        return MoveStatus(
            workflow_id=workflow.info().workflow_id,
            kind=KIND,
            subject=self.args.domain,
            state=self.state,
            stage=self.stage,
            attention=self.attention,
            stages=[replace(s) for s in self.stages.values()],
            eta=self.eta,
            original_mx=self.snapshot.mx if self.snapshot else [],
            target_mx=self.final,
            records_to_set=list(self.records_to_set),
            form=dict(self.form),
            alerts=list(self.alerts),
            resolvers=list(self.resolvers),
            authoritative=list(self.authoritative),
            message=self.message,
        )

    # -- helpers ----------------------------------------------------------------------------

    def interrupted(self) -> bool:
        return self.cancel_request is not None and not self.compensating

    async def act(self, method: Callable, arg: Any, timeout: timedelta, heartbeat: bool = False) -> Any:
        """Run one activity; a cancel accepted meanwhile interrupts it. Compensation is never
        interrupted and retries until it succeeds."""
        handle = workflow.start_activity_method(
            method,
            arg,
            start_to_close_timeout=timeout,
            retry_policy=policy.PERSISTENT_RETRY if self.compensating else policy.STAGE_RETRY,
            heartbeat_timeout=self.heartbeat_timeout if heartbeat else None,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.wait_condition(lambda: handle.done() or self.interrupted())
        if not handle.done():
            # wait until it has really stopped: compensation must not race a running update
            handle.cancel()
            try:
                await handle
            except (ActivityError, asyncio.CancelledError):
                pass
            raise _Cancelled()
        return handle.result()

    async def attempt(self, stage: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a stage's activity; when it fails for good, wait for a retry confirm or a cancel."""
        while True:
            try:
                return await call()
            except ActivityError as err:
                if self.compensating:  # only a non-retryable error gets here
                    raise ApplicationError(f"cancel: restoring the MX set failed: {_error_text(err)}") from err
                status = self.stages[stage]
                status.attempts += 1
                status.last_error = _error_text(err)
                status.state = StageState.WAITING
                status.waiting_for = (
                    f"a postmaster to fix the cause and retry (`mailmove confirm ID {stage}`), or cancel"
                )
                await self.escalate(f"{stage} failed: {status.last_error}")
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
            await self.transition(MoveState.WAITING, "waiting", detail=waiting_for)
        await self.pause(None, until=lambda: stage in self.confirmed)

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
            raise _Cancelled()

    async def escalate(self, why: str) -> None:
        self.attention = True
        if why not in self.alerts:
            self.alerts.append(why)
        await self.transition(MoveState.NEEDS_ATTENTION, "escalated", detail=why, result="needs attention")

    async def begin(self, stage: str) -> None:
        self.stage = stage
        status = self.stages[stage]
        status.state = StageState.RUNNING
        status.started = workflow.now()
        await self.transition(MoveState.RUNNING, "stage started")

    async def end(self, stage: str, detail: str = "") -> None:
        status = self.stages[stage]
        status.state = StageState.DONE
        status.ended = workflow.now()
        status.waiting_for = ""
        status.detail = detail or status.detail
        await self.transition(MoveState.RUNNING, "stage done", detail=status.detail, result="done")

    async def transition(
        self,
        state: MoveState,
        action: str,
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
        workflow.upsert_search_attributes(
            [search.STAGE.value_set(self.stage), search.STATE.value_set(self.state.value)]
        )
        self.events += 1
        await workflow.execute_activity_method(
            AuditActivities.record_transition,
            Transition(
                event_id=str(workflow.uuid4()),
                seq=self.events,
                workflow_id=workflow.info().workflow_id,
                kind=KIND,
                subject=self.args.domain,
                at=workflow.now(),
                stage=stage or self.stage,
                state=self.state.value,
                action=action,
                actor=actor,
                detail=detail,
                result=result,
                attention=self.attention,
            ),
            start_to_close_timeout=policy.AUDIT_TIMEOUT,
            retry_policy=policy.PERSISTENT_RETRY,
        )


def _records_to_set(domain: str, current: list[MxRecord], target: list[MxRecord], ttl: int) -> list[str]:
    """The exact zone-file lines a person must change, removals first."""
    ttl = ttl or DEFAULT_TTL
    lines = [f"delete: {domain}. {ttl} IN MX {r}" for r in mx_key(current) if r not in target]
    lines += [f"add: {domain}. {ttl} IN MX {r}" for r in mx_key(target) if r not in current]
    return lines
