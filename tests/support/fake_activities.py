"""Fake activities for testing the workflows' logic without real servers, as
temporalio/samples-python does: each is registered under the real activity's name
(`@activity.defn(name="apply_mx")`), so the real workflows run unchanged on a worker that
hosts these instead.

The fakes keep a small world of their own (the MX set each domain serves, the firewall rules
each server has open, the requests filed with the centre), so a test asserts what a move left
behind (the MX restored after a cancel) rather than which calls it made. Each test scripts
them per attempt: `fakes.script("apply_mx", fails("Refused"), Gate())`; an attempt with no
step left behaves normally, or as `fakes.always(name, step)` says. Every attempt is recorded.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.check import StoredReport
from activities.guard import GuardActivities
from mailmove.base import ids
from mailmove.base.config import Settings
from mailmove.base.guard import GuardInput, GuardMailed, GuardRun, GuardVerdict
from mailmove.base.model import (
    AddressCheck,
    AddressProbe,
    AddressReport,
    AddressVerdict,
    ConvergenceQuery,
    ConvergenceReport,
    FirewallChange,
    FirewallPlan,
    HostAddresses,
    HostQuery,
    MtaProbe,
    MtaProbeResult,
    MxChange,
    MxChangeResult,
    MxRecord,
    Notice,
    PortalFiling,
    PortalReceipt,
    PostfixChange,
    PostfixCheck,
    ProbeQuery,
    ProbeResult,
    Relay,
    RelayTestQuery,
    RelayTranscript,
    ResolverQuery,
    ResolverView,
    RowPage,
    ServerIdentity,
    ServerQuery,
    ServerView,
    Transition,
    WaveRow,
    WhitelistFiling,
    ZoneQuery,
    ZoneSnapshot,
    mx_key,
)
from mailmove.base.postfix import postfix_lines, shown
from mailmove.base.report import Check, DomainCheckQuery, Report, ServerCheckQuery
from mailmove.checks.drift import drift, findings, fingerprint
from mailmove.worker import activities as worker_activities

SETTLE = 0.03  # seconds for the other activities of a round to be picked up, or their answers to arrive

# What a fake attempt does instead of its normal behaviour: given the argument and the normal
# behaviour, a result (or an exception).
Step = Callable[[Any, Callable[[], Any]], Awaitable[Any]]


async def normally(arg: Any, normal: Callable[[], Any]) -> Any:
    """The attempt behaves as it would unscripted (to script a later one)."""
    return normal()


def returns(value: Any) -> Step:
    """The attempt returns `value`."""

    async def step(arg: Any, normal: Callable[[], Any]) -> Any:
        return value

    return step


def fails(error_type: str, message: str = "", retryable: bool = False) -> Step:
    """The attempt fails with an ApplicationError of `error_type` (non-retryable unless said)."""

    async def step(arg: Any, normal: Callable[[], Any]) -> Any:
        raise ApplicationError(message or f"fake {error_type}", type=error_type, non_retryable=not retryable)

    return step


class Gate:
    """Holds the attempt, beating (so that a cancel reaches it), until the test releases it;
    then it behaves normally. `entered` is set when an attempt is held."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.cancelled = False

    def release(self) -> None:
        self.opened.set()

    async def reached(self, timeout: float = 10) -> None:
        """Until an attempt is held here."""
        await asyncio.wait_for(self.entered.wait(), timeout)

    async def __call__(self, arg: Any, normal: Callable[[], Any]) -> Any:
        self.entered.set()
        try:
            while not self.opened.is_set():
                activity.heartbeat()
                try:
                    await asyncio.wait_for(self.opened.wait(), 0.05)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return normal()


@dataclass
class Call:
    name: str
    arg: Any
    attempt: int
    task_queue: str
    workflow_id: str


def passed(kind: str, subject: str, stage: str = "") -> Report:
    """A check report with one passing check."""
    check = Check("fake.ok", "MX", "ok", "all is well")
    return Report(kind, subject, stage, datetime.now(UTC).isoformat(), [check])


def with_error(kind: str, subject: str, summary: str, fix: str) -> Report:
    """A check report with one error: a preflight stops on it."""
    check = Check("fake.error", "SPF", "error", summary, fix=fix)
    return Report(kind, subject, "before" if kind == "domain" else "", datetime.now(UTC).isoformat(), [check])


@dataclass
class FakeActivities:
    """Every activity the three workflows call, with a world of their own."""

    ttl: int = 300  # of every MX RRset served
    negative_ttl: int = 60
    authoritative: list[str] = field(default_factory=lambda: ["192.0.2.53:53", "192.0.2.54:53"])
    old_addresses: list[str] = field(default_factory=lambda: ["192.0.2.10"])  # the old server's
    # how the centre's work shows: "portal" (it reports a request confirmed) or "gateway" (its MX
    # accepts postmaster@); that source answers after the other one, so that the move never has
    # to stop asking a source (a cancel that races the activity's answer fails the workflow task
    # on the time-skipping server, ACTIVITY_UNKNOWN, and stops its clock for the rest of the test;
    # the real server takes it in its stride)
    registered: str = ""
    refused: set[str] = field(default_factory=set)  # listed addresses the gateway refuses
    mx: dict[str, list[MxRecord]] = field(default_factory=dict)  # served per domain; default mail.<domain>
    open_on: set[str] = field(default_factory=set)  # servers whose tcp/25 rules are open
    main_cf: dict[str, str] = field(default_factory=lambda: {"relayhost": "[smtp.old.test]"})  # the new server's
    main_cf_before: dict[str, str | None] | None = None  # what configure_postfix recorded before its first change
    filings: dict[str, PortalFiling] = field(default_factory=dict)  # by idempotency key
    rows: dict[str, list[WaveRow]] = field(default_factory=dict)  # a wave's rows by batch
    schedules: dict[str, GuardInput] = field(default_factory=dict)  # guards made, by the move's id
    baselines: dict[str, dict[str, str]] = field(default_factory=dict)  # a guard's, by the move's id
    mailed: dict[str, str] = field(default_factory=dict)  # the fingerprint last mailed, by the move's id
    calls: list[Call] = field(default_factory=list)
    under_way: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # attempts by workflow
    steps: dict[str, deque[Step]] = field(default_factory=lambda: defaultdict(deque))
    defaults: dict[str, Step] = field(default_factory=dict)

    # -- scripting and reading ----------------------------------------------------------------

    def script(self, name: str, *steps: Step) -> None:
        """The next attempts of activity `name`, one step each, after those scripted before."""
        self.steps[name].extend(steps)

    def always(self, name: str, step: Step) -> None:
        """What every attempt of `name` does once its scripted steps are used up."""
        self.defaults[name] = step

    def args(self, name: str, workflow_id: str | None = None) -> list[Any]:
        return [c.arg for c in self.calls_of(name, workflow_id)]

    def calls_of(self, name: str, workflow_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.name == name and workflow_id in (None, c.workflow_id)]

    def transitions(self, workflow_id: str) -> list[Transition]:
        """The audit trail a move wrote (each attempt of a write counted once)."""
        return list({t.event_id: t for t in self.args("record_transition", workflow_id)}.values())

    def actions(self, workflow_id: str, *actions: str) -> list[tuple[str, str]]:
        """(action, stage) of each transition, of the `actions` named (all when none is)."""
        return [(t.action, t.stage) for t in self.transitions(workflow_id) if not actions or t.action in actions]

    def served(self, domain: str) -> tuple[MxRecord, ...]:
        return mx_key(self.mx.setdefault(domain, [MxRecord(10, f"mail.{domain}")]))

    async def answer(self, arg: Any, normal: Callable[[], Any], otherwise: Step | None = None) -> Any:
        """Record the attempt; run its scripted step, else `normal` (after `otherwise`, if given)."""
        info = activity.info()
        name = info.activity_type
        self.calls.append(Call(name, arg, info.attempt, info.task_queue, info.workflow_id or ""))
        step = self.steps[name].popleft() if self.steps[name] else self.defaults.get(name, otherwise)
        self.under_way[info.workflow_id] += 1
        try:
            return await step(arg, normal) if step else normal()
        finally:
            self.under_way[info.workflow_id] -= 1

    async def after_the_rest(self, arg: Any, normal: Callable[[], Any]) -> Any:
        """A step: answer once no other attempt of the workflow is under way, a moment after the
        last (for the others' answers to reach the server first)."""
        workflow_id = activity.info().workflow_id
        await asyncio.sleep(SETTLE)
        while self.under_way[workflow_id] > 1:
            activity.heartbeat()
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE)
        return normal()

    # -- DNS ----------------------------------------------------------------------------------

    @activity.defn(name="inspect_zone")
    async def inspect_zone(self, query: ZoneQuery) -> ZoneSnapshot:
        return await self.answer(
            query,
            lambda: ZoneSnapshot(
                query.domain, list(self.authoritative), list(self.served(query.domain)), self.ttl, self.negative_ttl, 1
            ),
        )

    @activity.defn(name="host_addresses")
    async def host_addresses(self, query: HostQuery) -> HostAddresses:
        return await self.answer(query, lambda: HostAddresses(query.host, ["192.0.2.25"]))

    @activity.defn(name="apply_mx")
    async def apply_mx(self, change: MxChange) -> MxChangeResult:
        """Compare-and-swap, as the real one: the set must be one of `accept`."""

        def swap() -> MxChangeResult:
            current = self.served(change.domain)
            if current == mx_key(change.target):
                return MxChangeResult(False, list(current), 2)
            if current not in {mx_key(a) for a in change.accept}:
                raise ApplicationError(f"{change.domain} serves {current}", type="MxChangedOutside", non_retryable=True)
            self.mx[change.domain] = list(change.target)
            return MxChangeResult(True, list(current), 2)

        return await self.answer(change, swap)

    @activity.defn(name="poll_authoritative")
    async def poll_authoritative(self, query: ConvergenceQuery) -> ConvergenceReport:
        def poll() -> ConvergenceReport:
            served = list(self.served(query.domain))
            ok = mx_key(served) == mx_key(query.target)
            return ConvergenceReport(ok, [ServerView(a, ok, served, 2) for a in query.authoritative])

        return await self.answer(query, poll)

    @activity.defn(name="observe_resolvers")
    async def observe_resolvers(self, query: ResolverQuery) -> list[ResolverView]:
        def observe() -> list[ResolverView]:
            served = list(self.served(query.domain))
            return [ResolverView("192.0.2.1:53", mx_key(served) == mx_key(query.target), served, self.ttl)]

        return await self.answer(query, observe)

    @activity.defn(name="server_identity")
    async def server_identity(self, query: ServerQuery) -> ServerIdentity:
        return await self.answer(
            query,
            lambda: ServerIdentity(
                [query.ipv4], [AddressCheck(query.ipv4, [query.fqdn], True)], list(self.old_addresses), []
            ),
        )

    # -- the centre's portal, the gateway's SMTP ---------------------------------------------

    @activity.defn(name="file_request")
    async def file_request(self, filing: PortalFiling) -> PortalReceipt:
        def file() -> PortalReceipt:
            self.filings.setdefault(filing.key, filing)
            return PortalReceipt(filing.key, f"REQ-{list(self.filings).index(filing.key) + 1}", "received")

        return await self.answer(filing, file)

    @activity.defn(name="file_whitelist")
    async def file_whitelist(self, filing: WhitelistFiling) -> int:
        return await self.answer(filing, lambda: len(filing.addresses))

    @activity.defn(name="request_status")
    async def request_status(self, receipt: PortalReceipt) -> str:
        if self.registered == "portal":
            return await self.answer(receipt, lambda: "confirmed", self.after_the_rest)
        return await self.answer(receipt, lambda: "received")

    @activity.defn(name="probe_rcpt")
    async def probe_rcpt(self, query: ProbeQuery) -> ProbeResult:
        if self.registered == "gateway":
            return await self.answer(
                query, lambda: ProbeResult(True, query.hosts[0], 250, "2.1.5 OK"), self.after_the_rest
            )
        return await self.answer(query, lambda: ProbeResult(False, query.hosts[0], 550, "5.1.1 relay access denied"))

    @activity.defn(name="probe_addresses")
    async def probe_addresses(self, query: AddressProbe) -> AddressReport:
        def probe() -> AddressReport:
            verdicts = [
                AddressVerdict(a, "refused", 550, "5.1.1 unknown")
                if a in self.refused
                else AddressVerdict(a, "accepted", 250, "OK")
                for a in query.addresses
            ]
            return AddressReport(query.hosts[0], verdicts)

        return await self.answer(query, probe)

    # -- checks, audit, mail ------------------------------------------------------------------

    @activity.defn(name="check_domain")
    async def check_domain(self, query: DomainCheckQuery) -> Report:
        return await self.answer(query, lambda: passed("domain", query.domain, query.stage))

    @activity.defn(name="check_server")
    async def check_server(self, query: ServerCheckQuery) -> Report:
        return await self.answer(query, lambda: passed("server", query.fqdn))

    @activity.defn(name="store_report")
    async def store_report(self, stored: StoredReport) -> None:
        return await self.answer(stored, lambda: None)

    @activity.defn(name="record_transition")
    async def record_transition(self, transition: Transition) -> bool:
        return await self.answer(transition, lambda: True)

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: Notice) -> bool:
        return await self.answer(notice, lambda: True)

    # -- the guard ------------------------------------------------------------------------------

    @activity.defn(name="ensure_schedule")
    async def ensure_schedule(self, guard: GuardInput) -> str:
        def make() -> str:
            self.schedules.setdefault(guard.workflow_id, guard)
            return ids.guard_id(guard.workflow_id)

        return await self.answer(guard, make)

    @activity.defn(name="guard_input")
    async def guard_input(self, move_id: str) -> GuardInput:
        def load() -> GuardInput:
            if move_id not in self.schedules:
                raise ApplicationError(f"{move_id} has no guard", non_retryable=True)
            return self.schedules[move_id]

        return await self.answer(move_id, load)

    @activity.defn(name="assess")
    async def assess(self, run: GuardRun) -> GuardVerdict:
        """As the store judges: the first run without a baseline is the baseline."""

        def judge() -> GuardVerdict:
            drifting = drift(self.baselines.setdefault(run.workflow_id, findings(run.report)), run.report)
            mark = fingerprint(drifting)
            if not mark:
                self.mailed.pop(run.workflow_id, None)
            told = not mark or self.mailed.get(run.workflow_id) == mark or not run.contact
            notice = None if told else Notice(mark, run.workflow_id, "drift", run.contact, "drift", mark)
            return GuardVerdict(drifting, mark, notice)

        return await self.answer(run, judge)

    @activity.defn(name="mailed")
    async def mailed_(self, mailed: GuardMailed) -> None:
        return await self.answer(mailed, lambda: self.mailed.__setitem__(mailed.workflow_id, mailed.fingerprint))

    @activity.defn(name="wave_rows")
    async def wave_rows(self, page: RowPage) -> list[WaveRow]:
        return await self.answer(
            page, lambda: [r for r in self.rows.get(page.batch, []) if r.line > page.after][: page.size]
        )

    # -- the host agent -----------------------------------------------------------------------

    @activity.defn(name="open_firewall")
    async def open_firewall(self, plan: FirewallPlan) -> FirewallChange:
        def open_() -> FirewallChange:
            added = [] if plan.server in self.open_on else [f"in {n}" for n in plan.inbound]
            self.open_on.add(plan.server)
            return FirewallChange(bool(added), added, [], f"opened tcp/25: {len(added)} added")

        return await self.answer(plan, open_)

    @activity.defn(name="close_firewall")
    async def close_firewall(self, plan: FirewallPlan) -> FirewallChange:
        def close() -> FirewallChange:
            removed = [f"in {n}" for n in plan.inbound] if plan.server in self.open_on else []
            self.open_on.discard(plan.server)
            return FirewallChange(bool(removed), [], removed, f"closed tcp/25: {len(removed)} removed")

        return await self.answer(plan, close)

    @activity.defn(name="check_postfix")
    async def check_postfix(self, relay: Relay) -> PostfixCheck:
        expected = {"relayhost": f"[{relay.host}]:{relay.port}"}
        return await self.answer(relay, lambda: PostfixCheck(expected, dict(expected), []))

    @activity.defn(name="configure_postfix")
    async def configure_postfix(self, relay: Relay) -> PostfixChange:
        """As the real one: the values before the first change recorded, a second run changes nothing."""

        def configure() -> PostfixChange:
            target = postfix_lines(relay)
            if self.main_cf_before is None:
                self.main_cf_before = {name: self.main_cf.get(name) for name in target}
            changed = any(self.main_cf.get(name) != value for name, value in target.items())
            self.main_cf.update(target)
            return PostfixChange(changed, dict(self.main_cf_before), dict(target), f"set {shown(target)}")

        return await self.answer(relay, configure)

    @activity.defn(name="restore_postfix")
    async def restore_postfix(self, relay: Relay) -> PostfixChange:
        def restore() -> PostfixChange:
            if self.main_cf_before is None:
                return PostfixChange(False, {}, {}, "nothing to restore")
            record, self.main_cf_before = self.main_cf_before, None
            for name, value in record.items():
                if value is None:
                    self.main_cf.pop(name, None)
                else:
                    self.main_cf[name] = value
            return PostfixChange(True, record, record, f"restored {shown(record)}")

        return await self.answer(relay, restore)

    @activity.defn(name="probe_postfix")
    async def probe_postfix(self, probe: MtaProbe) -> MtaProbeResult:
        return await self.answer(
            probe,
            lambda: MtaProbeResult(
                "4QX1", f"<{probe.probe_id}@chem.test>", "mailout.gw.test[192.0.2.25]:25", "250 2.0.0 Ok: queued as 9A"
            ),
        )

    @activity.defn(name="relay_test")
    async def relay_test(self, query: RelayTestQuery) -> RelayTranscript:
        return await self.answer(
            query, lambda: RelayTranscript(str(query.relay), query.source, "passed", "the relay accepted the test", [])
        )

    def activities(self) -> list[Callable]:
        """What the worker hosts (mailmove/worker.py `activities`)."""
        return [
            self.inspect_zone,
            self.host_addresses,
            self.apply_mx,
            self.poll_authoritative,
            self.observe_resolvers,
            self.server_identity,
            self.record_transition,
            self.file_request,
            self.file_whitelist,
            self.request_status,
            self.probe_rcpt,
            self.probe_addresses,
            self.check_domain,
            self.check_server,
            self.store_report,
            self.send_notice,
            self.wave_rows,
            self.ensure_schedule,
            self.guard_input,
            self.assess,
            self.mailed_,
        ]

    def agent_activities(self) -> list[Callable]:
        """What the host agent hosts (mailmove/worker.py `agent_activities`)."""
        return [
            self.open_firewall,
            self.close_firewall,
            self.check_postfix,
            self.configure_postfix,
            self.restore_postfix,
            self.probe_postfix,
            self.relay_test,
        ]


class NoSchedules(GuardActivities):
    """The guard's activities on the time-skipping test server, which has no Schedules: the real
    ones, but `ensure_schedule` is a fake of the same name that keeps the guard's row as the real
    one does and makes no schedule. Without it a done move would carry the alert "the guard was not
    scheduled"."""

    @activity.defn(name="ensure_schedule")
    async def ensure_schedule(self, guard: GuardInput) -> str:
        await asyncio.to_thread(self._add, guard, ids.guard_id(guard.workflow_id))
        return ids.guard_id(guard.workflow_id)


def without_schedules(settings: Settings) -> list[Callable]:
    """A worker's activities (mailmove/worker.py `activities`) with NoSchedules' `ensure_schedule`."""
    fake = NoSchedules(settings).ensure_schedule
    return [fake if a.__name__ == fake.__name__ else a for a in worker_activities(settings)]
