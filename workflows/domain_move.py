"""DomainMoveWorkflow: a mail domain moves behind the central gateway without a bounce.

Stages (README.md): preflight, add_gateway_mx, request_domain, await_registration,
remove_legacy_mx, await_propagation, done. Waits of minutes to days are durable timers and
updates here; every effect is an activity; human actions, waits and the audit trail come
from `Migration`. Cancel before `remove_legacy_mx` restores the MX set recorded in
preflight, verified.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.check import CheckActivities
    from activities.dns import DnsActivities
    from activities.portal import PortalActivities
    from activities.smtp_probe import ProbeActivities
    from mailmove.base import hints
    from mailmove.base.errors import rejection
    from mailmove.base.guard import GuardInput, domain_guard
    from mailmove.base.model import (
        AddressProbe,
        AddressVerdict,
        ConfirmInput,
        ConvergenceQuery,
        ConvergenceReport,
        DomainMoveInput,
        HostQuery,
        MoveResult,
        MxChange,
        MxRecord,
        ProbeQuery,
        ProbeResult,
        ResolverQuery,
        ResolverView,
        ServerView,
        StageStatus,
        WhitelistFiling,
        ZoneQuery,
        ZoneSnapshot,
        mx_key,
    )
    from mailmove.base.report import DomainCheckQuery
    from mailmove.base.vocabulary import (
        DOMAIN_STAGES,
        Action,
        AddressState,
        CheckStage,
        DnsMode,
        Event,
        Kind,
        MoveState,
        PortalMode,
        Request,
        Stage,
        StageState,
        Verdict,
    )
    from workflows import policy
    from workflows.migration import Migration, error_text, findings

DEFAULT_TTL = 3600  # TTL for new MX records when the domain had none
SHOWN = 20  # addresses named in one line of a status or an answer


def _mx_text(records: list[MxRecord]) -> str:
    return ", ".join(str(r) for r in mx_key(records)) or "no MX"


def _some(addresses: list[str]) -> str:
    """At most SHOWN addresses, and how many more: a line a person can read."""
    more = len(addresses) - SHOWN
    return ", ".join(addresses[:SHOWN]) + (f" … (+{more} more)" if more > 0 else "")


@workflow.defn
class DomainMoveWorkflow(Migration):
    KIND = Kind.DOMAIN
    STAGES = DOMAIN_STAGES
    NO_RETURN = Stage.REMOVE_LEGACY_MX  # from here a cancel would not restore the legacy MX

    @workflow.init
    def __init__(self, args: DomainMoveInput) -> None:
        self.setup(args.domain, args.timings, args.portal_mode, args.contact)
        self.args = args
        self.snapshot: ZoneSnapshot | None = None
        gateway = [MxRecord(args.gateway_preference, host) for host in args.gateway_mx]
        self.with_legacy = list(mx_key(gateway + [MxRecord(args.legacy_preference, args.legacy_mx)]))
        self.final = list(mx_key(gateway))
        self.addresses = {a: AddressVerdict(a, AddressState.PENDING, None, "") for a in args.addresses}
        self.refused: list[str] = []  # listed addresses the gateway refuses (not on the Whitelist)
        self.recheckable: list[str] = []  # not accepted: a confirm checks them again now (while the stage waits)
        self.whitelist_rounds = 0  # Whitelist checks finished, with or without a result
        self.whitelist_answer = ""  # what the last one found, as a confirm answers it
        self.recheck_asked = False  # a confirm waits for the next check: one attempt, its failure is the answer
        self.eta: datetime | None = None
        self.records_to_set: list[str] = []
        self.resolvers: list[ResolverView] = []
        self.authoritative: list[ServerView] = []
        self.dns_timeout = policy.seconds(args.timings.dns_timeout)
        self.probe_timeout = policy.seconds(args.timings.probe_timeout)

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, args: DomainMoveInput) -> MoveResult:
        return await self.drive(
            [
                self.preflight,
                lambda: self.change_mx(Stage.ADD_GATEWAY_MX, self.with_legacy, [self.snapshot.mx]),
                self.request_domain,
                self.await_registration,
                lambda: self.change_mx(Stage.REMOVE_LEGACY_MX, self.final, [self.with_legacy]),
                self.await_propagation,
                self.finish,
            ]
        )

    async def preflight(self) -> None:
        await self.begin(Stage.PREFLIGHT)
        try:
            self.snapshot = await self.act(DnsActivities.inspect_zone, ZoneQuery(self.args.domain), self.dns_timeout)
            legacy = await self.act(DnsActivities.host_addresses, HostQuery(self.args.legacy_mx), self.dns_timeout)
        except ActivityError as err:
            raise ApplicationError(f"preflight: {error_text(err)}", non_retryable=True) from err
        if self.args.legacy_mx in self.args.gateway_mx:
            raise ApplicationError("preflight: the legacy MX is one of the gateway hosts", non_retryable=True)
        if mx_key(self.snapshot.mx) == mx_key(self.final):
            raise ApplicationError(f"preflight: {self.args.domain} is already behind the gateway", non_retryable=True)
        report = await self.check(Stage.PREFLIGHT, CheckActivities.check_domain, self.check_query(CheckStage.BEFORE))
        if report and report.errors:
            raise ApplicationError("preflight: " + findings(report.errors), non_retryable=True)
        self.message = (
            f"zone {self.snapshot.zone}, serial {self.snapshot.serial}; current MX: {_mx_text(self.snapshot.mx)} "
            f"(TTL {self.snapshot.mx_ttl}s); legacy host {self.args.legacy_mx} has {', '.join(legacy.addresses)}"
        )
        if report and report.with_verdict(Verdict.WARNING):
            self.message += "; warnings: " + findings(report.with_verdict(Verdict.WARNING))
        await self.end(Stage.PREFLIGHT, detail=self.message)

    def check_query(self, stage: CheckStage) -> DomainCheckQuery:
        a = self.args
        return DomainCheckQuery(a.domain, stage, a.gateway_mx, a.gateway_preference, a.legacy_mx, self.snapshot.mx)

    async def change_mx(self, stage: str, target: list[MxRecord], accept: list[list[MxRecord]]) -> None:
        await self.begin(stage)
        ttl = self.snapshot.mx_ttl or DEFAULT_TTL
        if self.args.dns_mode == DnsMode.RFC2136:
            change = MxChange(self.args.domain, self.snapshot.zone, target, accept, ttl)
            result = await self.attempt(stage, lambda: self.act(DnsActivities.apply_mx, change, self.dns_timeout))
            self.stages[stage].detail = (
                f"UPDATE sent, serial {result.serial}"
                if result.changed
                else "the primary already served the target set"
            )
        await self.converge(self.stages[stage], accept[0], target)
        replaced_ttl = (self.snapshot.mx_ttl or self.snapshot.negative_ttl) if stage == Stage.ADD_GATEWAY_MX else ttl
        self.eta = workflow.now() + timedelta(seconds=replaced_ttl)
        self.stages[stage].eta = self.eta
        await self.end(stage, detail=f"every authoritative server serves {_mx_text(target)}")

    async def converge(self, status: StageStatus, current: list[MxRecord], target: list[MxRecord]) -> None:
        """Until every authoritative address serves exactly `target`; the caller's T_conv is now.

        In centre mode a person makes the change from `current`: the status shows the lines.
        """
        t = self.args.timings
        centre = self.args.dns_mode == DnsMode.CENTRE
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
                lambda q=query: self.act(DnsActivities.poll_authoritative, q, policy.polling_timeout(q.window)),
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
                await self.transition(MoveState.WAITING, Action.WAITING, detail=status.waiting_for)
            if workflow.now() - started >= timedelta(seconds=escalate_after) and not self.attention:
                await self.escalate(f"{stage}: authoritative servers still disagree after {escalate_after:g}s")
            if query.window > 0:  # after the quick first round, straight into a full window
                await self.pause(t.centre_poll if centre else t.convergence_pause)
            query = replace(query, window=window)

    async def request_domain(self) -> None:
        """The domain, and a Whitelist entry for each externally reachable address."""
        stage = Stage.REQUEST_DOMAIN
        await self.begin(stage)
        a = self.args
        values = {"domain": a.domain_display or a.domain, "mx": ", ".join(a.gateway_mx)}
        if a.addresses and self.portal_mode == PortalMode.MANUAL:  # one form for a person: both requests
            values |= {"whitelist_form": a.wl_form, "whitelist": "\n".join(a.addresses)}
        how = await self.file(stage, Request.DOMAIN, a.domain, values, a.portal_form)
        if a.addresses and self.portal_mode == PortalMode.HTTP:
            filing = WhitelistFiling(str(workflow.uuid4()), workflow.info().workflow_id, a.domain, list(a.addresses))
            timeout = policy.seconds(self.timings.portal_timeout * 2 + len(a.addresses))
            filed = await self.attempt(stage, lambda: self.act(PortalActivities.file_whitelist, filing, timeout))
            how += f"; {filed} Whitelist entries filed"
        for verdict in self.addresses.values():
            verdict.state = AddressState.FILED
        if not a.external:
            how += "; the domain receives nothing from outside (--no-external): no Whitelist entry"
        elif not a.addresses:
            how += "; no external addresses were given: the Whitelist is neither filed nor checked"
            self.alerts.append("no external addresses were given (--addresses FILE or --no-external)")
        await self.end(stage, detail=how)

    async def await_registration(self) -> None:
        """Until confirmed: a postmaster, the portal, or the gateway MX accepting mail for the domain."""
        stage = Stage.AWAIT_REGISTRATION
        await self.begin(stage)
        rcpt = f"postmaster@{self.args.domain}"
        how = await self.wait_person(
            stage,
            f"the centre's confirmation that {self.args.domain} is registered at the centre and at DFN "
            f"(`{hints.confirm(workflow.info().workflow_id, stage)}`), or the gateway MX accepting {rcpt}",
            detect=lambda: self.detect(rcpt),
            overdue="no registration",
        )
        self.detection.stop()
        if self.args.addresses:
            how += "; " + await self.verify_whitelist(stage)
        await self.end(stage, detail=how)

    async def verify_whitelist(self, stage: str) -> str:
        """Every listed address must be accepted by the gateway MX before the legacy MX goes;
        refused ones keep the move waiting (the check repeats, and a plain confirm repeats it at
        once) unless accepted as lost."""
        a, t = self.args, self.timings
        status = self.stages[stage]
        pending = list(a.addresses)
        told = False
        began = workflow.now()
        while True:
            probe = AddressProbe(list(a.gateway_mx), a.gateway_smtp_port, pending, rate=a.probe_rate)
            retry = policy.ONE_ATTEMPT if self.recheck_asked else None
            self.recheck_asked = False
            try:
                report = await self.act(
                    ProbeActivities.probe_addresses, probe, self.probe_timeout_for(pending), retry=retry
                )
            except ActivityError as err:
                status.last_error = error_text(err)
                found = f"the check could not run: {status.last_error}; "
            else:
                for verdict in report.verdicts:
                    self.addresses[verdict.address] = verdict
                pending = [v.address for v in report.verdicts if v.state != AddressState.ACCEPTED]
                self.refused = [v.address for v in report.verdicts if v.state == AddressState.REFUSED]
                if not pending:
                    how = f"{report.host} accepts all {len(a.addresses)} listed addresses"
                    self.checked(f"{stage}: checked again: {how}; the move goes on")
                    return how
                found = "checked again: "
            status.state = StageState.WAITING
            status.waiting_for = self.whitelist_wait(stage, pending)
            if not told:
                told = True
                await self.transition(MoveState.WAITING, Action.WAITING, detail=status.waiting_for)
                await self.tell(Event.WAITING, stage, status.waiting_for)
            if workflow.now() - began >= timedelta(seconds=t.escalate_after) and not self.attention:
                await self.escalate(f"{stage}: {len(pending)} listed address(es) still not accepted by the gateway")
            self.confirmed.pop(stage, None)
            self.awaiting.add(stage)
            self.recheckable = pending
            self.checked(f"{stage}: {found}{status.waiting_for}")  # answered when a confirm is possible again
            await self.pause(t.probe_interval, until=lambda: stage in self.confirmed)
            self.recheckable = []
            self.awaiting.discard(stage)  # refused until the check is over (it would drop a confirm)
            if stage in self.confirmed:
                lost = self.confirmed[stage].lost
                for address in lost:
                    self.addresses[address].state = AddressState.LOST
                pending = [p for p in pending if p not in lost]
                if not pending:
                    return f"accepted as lost by {self.confirmed[stage].actor}: {', '.join(lost)}"

    def whitelist_wait(self, stage: str, pending: list[str]) -> str:
        """What the stage waits for while listed addresses are not accepted, and what a person can do."""
        wid = workflow.info().workflow_id
        if self.refused:
            text = (
                f"the gateway refuses {len(self.refused)} listed address(es), not on the Whitelist: "
                f"{_some(self.refused)}; file them at {self.args.wl_form}, then "
            )
        else:  # deferred (4xx), or the check could not run
            text = f"the gateway has not accepted {len(pending)} listed address(es) yet: {_some(pending)}; "
        text += f"`{hints.confirm(wid, stage)}` checks again now (else every {self.timings.probe_interval:g}s)"
        if self.refused:
            text += f", or accept them as lost: `{hints.confirm(wid, stage, lost=True)}`"
        return text

    def checked(self, answer: str) -> None:
        """A Whitelist check is over: a confirm that asked for it answers with `answer`."""
        self.whitelist_answer = answer
        self.whitelist_rounds += 1

    def probe_timeout_for(self, addresses: list[str]) -> timedelta:
        return policy.seconds(self.timings.probe_timeout + len(addresses) / self.args.probe_rate)

    def confirm_answer(self, request: ConfirmInput) -> Awaitable[str] | None:
        """A confirm while listed addresses are not accepted checks those not accepted as lost
        again at once, in one attempt (a person waits: a failure is the answer, not a reason to
        retry for minutes), and answers with the result. A move that had such a confirm before
        "confirm-recheck" answered at once (and replays so)."""
        rest = [x for x in self.recheckable if x not in request.lost]
        if request.stage != Stage.AWAIT_REGISTRATION or not rest or not workflow.patched("confirm-recheck"):
            return None
        self.recheck_asked = True
        bound = self.probe_timeout_for(rest) + self.heartbeat_timeout
        return self.recheck_answer(request.stage, self.whitelist_rounds, bound)

    async def recheck_answer(self, stage: str, rounds: int, timeout: timedelta) -> str:
        """The next check's result. Its one attempt ends within its timeout once it runs; `timeout`
        is that and a heartbeat timeout more (an attempt that ran out is reported as such), and
        bounds the wait for an attempt that never starts."""
        try:
            await workflow.wait_condition(
                lambda: self.whitelist_rounds > rounds or self.cancel_request is not None or self.compensating,
                timeout=timeout,
            )
        except TimeoutError:
            return (
                f"{stage}: the check had no result within {timeout.total_seconds():g}s; it goes on: "
                f"`{hints.show(workflow.info().workflow_id)}` shows its result"
            )
        if self.whitelist_rounds == rounds:
            return f"{stage}: not checked again, the move is being cancelled"
        return self.whitelist_answer

    def check_confirm(self, request: ConfirmInput) -> None:
        if request.lost and request.stage != Stage.AWAIT_REGISTRATION:
            raise rejection("lost", "only await_registration takes addresses accepted as lost")
        if request.lost and not self.refused:
            raise rejection("lost", "the gateway refuses no listed address (yet)")
        unknown = [x for x in request.lost if x not in self.addresses]
        if unknown:
            raise rejection("lost", f"not listed for this domain: {', '.join(unknown)}")
        missing = [x for x in self.refused if x not in request.lost]
        if request.lost and missing:  # a plain confirm checks them again
            raise rejection(
                "lost",
                f"the gateway refuses {len(missing)} more address(es); name each one to accept it as lost "
                f"(or file them on the Whitelist and confirm without --lost to check again now): {_some(missing)}",
            )

    async def detect(self, rcpt: str) -> str:
        """One detection round; a failing probe is shown, not fatal: the wait goes on. Moves
        begun before "detect-apart" asked the portal, then the probe, one after the other."""
        status = self.stages[Stage.AWAIT_REGISTRATION]
        if workflow.patched("detect-apart"):
            query = ProbeQuery(self.args.gateway_mx, self.args.gateway_smtp_port, rcpt)
            sources = [
                self.detection.source(
                    "RCPT probe",
                    ProbeActivities.probe_rcpt,
                    query,
                    self.timings.probe_timeout,
                    lambda probe: self.probed(probe, rcpt),
                )
            ]
            if receipt := self.receipts.get(Request.DOMAIN):
                sources.insert(0, self.portal_source(receipt))
            return await self.detect_round(status.name, sources)
        try:
            if how := await self.portal_confirmed(Request.DOMAIN):
                return how
            probe: ProbeResult = await self.act(
                ProbeActivities.probe_rcpt,
                ProbeQuery(self.args.gateway_mx, self.args.gateway_smtp_port, rcpt),
                self.probe_timeout,
                retry=policy.SEQUENTIAL_DETECT_RETRY,
            )
        except ActivityError as err:
            status.last_error = error_text(err)
            return ""
        return self.probed(probe, rcpt)

    def probed(self, probe: ProbeResult, rcpt: str) -> str:
        """How the probe saw the registration, or "" with the refusal as the last error."""
        if probe.accepted:
            return f"{probe.host} accepts {rcpt} ({probe.code} {probe.message})"
        self.stages[Stage.AWAIT_REGISTRATION].last_error = f"{probe.host} refuses {rcpt}: {probe.code} {probe.message}"
        return ""

    async def await_propagation(self) -> None:
        """The propagation rule (docs/architecture.md): now >= T_conv + TTL_old; resolvers are evidence."""
        stage = Stage.AWAIT_PROPAGATION
        await self.begin(stage)
        eta: datetime = self.eta
        status = self.stages[stage]
        status.eta = eta
        status.state = StageState.WAITING
        status.waiting_for = f"resolvers to drop the old MX set; they may keep it until {eta.isoformat()}"
        await self.transition(MoveState.WAITING, Action.WAITING, detail=status.waiting_for)
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
            await self.transition(self.state, Action.ALERT, detail=self.alerts[-1])
        await self.end(stage, detail=self.alerts[-1] if stale else "the old MX set has expired from every cache")

    async def observe_resolvers(self) -> list[ResolverView]:
        try:
            views = await self.act(
                DnsActivities.observe_resolvers, ResolverQuery(self.args.domain, self.final), self.dns_timeout
            )
        except ActivityError as err:
            self.stages[self.stage].last_error = error_text(err)
            return []
        self.resolvers = views
        return views

    async def finish(self) -> None:
        await self.begin(Stage.DONE)
        await self.converge(self.stages[Stage.DONE], self.final, self.final)
        self.eta = None
        self.message = (
            f"{self.args.domain} is behind the gateway ({_mx_text(self.final)}) and the old MX set has expired "
            f"from every cache: the old server {self.args.legacy_mx} may now be switched off."
        )
        await self.complete(CheckActivities.check_domain, self.check_query(CheckStage.AFTER))

    async def compensate(self) -> None:
        """Put back the MX set recorded in preflight, verified on every authoritative server."""
        actor = await self.mark_cancelled()
        if self.snapshot is None:
            self.message = "cancelled before anything was changed"
        else:
            original = self.snapshot.mx
            if self.args.dns_mode == DnsMode.RFC2136:
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
            Action.CANCELLED,
            actor=actor,
            detail=self.message,
        )

    def guard_input(self) -> GuardInput:
        return domain_guard(workflow.info().workflow_id, self.args)

    def cancel_outcome(self) -> str:
        if self.snapshot is None:
            return "cancelled; nothing had been changed"
        return f"cancelling: the MX set will be restored to {_mx_text(self.snapshot.mx)}"

    def past_return(self) -> str:
        return f"the legacy MX is already being removed ({self.stage}); a cancel would not restore it"

    def details(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "original_mx": self.snapshot.mx if self.snapshot else [],
            "target_mx": self.final,
            "records_to_set": list(self.records_to_set),
            "resolvers": list(self.resolvers),
            "authoritative": list(self.authoritative),
            "addresses": list(self.addresses.values()),
        }


def _records_to_set(domain: str, current: list[MxRecord], target: list[MxRecord], ttl: int) -> list[str]:
    """The exact zone-file lines a person must change, removals first."""
    ttl = ttl or DEFAULT_TTL
    lines = [f"delete: {domain}. {ttl} IN MX {r}" for r in mx_key(current) if r not in target]
    lines += [f"add: {domain}. {ttl} IN MX {r}" for r in mx_key(target) if r not in current]
    return lines
