"""`mailmove survey`: where one domain stands against the gateway's rules, by the domain checks.

The checks of `mailmove check` run with the stage inferred; what they read is sorted into one
class (vocabulary `SurveyClass`): behind the gateway, partly, not yet, no mail, or broken with
the DNS problem that makes a move's `preflight` fail. Many domains are read at once, so every
query mailmove sends (its own and checkdmarc's) first takes a token from the bucket of the
server it goes to: a campus's resolvers and department servers are asked at `survey.rate` at
most, however many domains are in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import dns.exception
import dns.nameserver
import dns.resolver
from temporalio.exceptions import ApplicationError

from mailmove.base.config import HostPort, Settings
from mailmove.base.model import MxRecord, mx_key
from mailmove.base.names import BadName, to_alabel
from mailmove.base.report import Check, DomainCheckQuery, Report
from mailmove.base.vocabulary import MoveState, SurveyClass, Verdict
from mailmove.checks.dns import NOT_AUTHORITATIVE, Dns
from mailmove.checks.domain import TIMEOUTS, DomainChecks, is_null_mx, is_root

LAME = ("REFUSED", "NOTAUTH", NOT_AUTHORITATIVE)  # a server named for the zone that does not serve it


class Limits:
    """A token bucket per DNS server address, shared by the event loop and checkdmarc's threads:
    `rate` queries a second, bursts of a tenth of a second's worth. A query reserves its token
    and waits until it is due, so waits grow with the queue, never past it."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.buckets: dict[str, tuple[float, float]] = {}  # server -> (tokens, when counted)
        self.queries = 0
        self.lock = threading.Lock()

    def reserve(self, server: str) -> float:
        """Takes a token from `server`'s bucket; the seconds until it is due."""
        with self.lock:
            now = time.monotonic()
            tokens, counted = self.buckets.get(server, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - counted) * self.rate) - 1
            self.buckets[server] = (tokens, now)
            self.queries += 1
        return max(0.0, -tokens / self.rate)

    async def wait(self, server: str) -> None:
        await asyncio.sleep(self.reserve(server))


class LimitedNameserver(dns.nameserver.Do53Nameserver):
    """A resolver's address whose every query, from the event loop or from a thread, waits for
    its token first."""

    def __init__(self, address: str, port: int, limits: Limits):
        super().__init__(address, port=port)
        self.limits = limits
        self.key = str(HostPort(address, port))

    def query(self, *args, **kwargs):
        time.sleep(self.limits.reserve(self.key))
        return super().query(*args, **kwargs)

    async def async_query(self, *args, **kwargs):
        await self.limits.wait(self.key)
        return await super().async_query(*args, **kwargs)


@dataclass
class ServerAnswer:
    """What one authoritative server answered for the domain's MX set."""

    server: str
    mx: list[MxRecord] | None = None  # None: no usable answer, `problem` says why
    ttl: int = 0
    problem: str = ""


class SurveyDns(Dns):
    """Dns for a survey: every query waits for its server's token, and each authoritative
    server's MX answer (its TTL, or what was wrong) is kept for the domain's survey."""

    def __init__(self, settings: Settings, limits: Limits):
        super().__init__(settings)
        self.limits = limits
        self.answers: dict[str, list[ServerAnswer]] = defaultdict(list)
        configured = [(r.host, r.port) for r in settings.dns.resolvers]
        self.resolvers = configured or [(a, 53) for a in dns.resolver.get_default_resolver().nameservers]

    def nameservers(self) -> list[dns.nameserver.Nameserver]:
        return [LimitedNameserver(host, port, self.limits) for host, port in self.resolvers]

    async def ask(self, server: HostPort, name: str, rdtype: str, recursive: bool = False):
        await self.limits.wait(str(server))
        return await super().ask(server, name, rdtype, recursive)

    async def read_mx(self, server: HostPort, domain: str) -> tuple[list[MxRecord], int]:
        try:
            mx, ttl = await super().read_mx(server, domain)
        except ApplicationError as exc:
            lame = "lame server: " if exc.type in LAME else ""
            self.answers[domain].append(ServerAnswer(str(server), problem=f"{lame}{exc.message}"))
            raise
        except (dns.exception.DNSException, OSError) as exc:
            timeout = isinstance(exc, dns.exception.Timeout)
            why = f"no answer in {self.settings.dns.timeout:g} s (timeout)" if timeout else f"{exc}"
            self.answers[domain].append(ServerAnswer(str(server), problem=f"{server}: {why}"))
            raise
        self.answers[domain].append(ServerAnswer(str(server), mx, ttl))
        return mx, ttl


@dataclass
class MoveSeen:
    """The latest move of the domain in the store's read model."""

    id: str
    state: str  # a MoveState
    stage: str


@dataclass
class DomainSurvey:
    domain: str
    survey_class: SurveyClass
    reason: str  # why this class, in the postmaster's terms
    mx: list[MxRecord] = field(default_factory=list)  # as the authoritative servers serve it
    mx_ttl: int = 0  # its TTL (the longest any server gives)
    servers: list[ServerAnswer] = field(default_factory=list)
    implicit_mx: bool = False  # no MX, an address: mail goes to the address (RFC 5321 §5.1)
    legacy_mx: str = ""  # not yet: the department's most preferred host, a wave row's `legacy_mx`
    spf: str = ""  # ok | none | invalid | not_tested
    spf_record: str = ""  # as served (a peer's words: shown as plain text only)
    spf_gateway: bool | None = None  # the record covers the gateway; None: not known (no usable record)
    dmarc: str = ""  # ok | none | invalid | not_tested
    dmarc_policy: str = ""
    hazards: list[str] = field(default_factory=list)  # MTA-STS and DANE findings for a move
    move: MoveSeen | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["class"] = data.pop("survey_class")
        return data


def _check(report: Report, id: str) -> Check | None:
    return next((c for c in report.checks if c.id == id), None)


def _record(report: Report, *ids: str) -> str:
    """ok | none | invalid | not_tested from a record's checks (SPF's lookup limit counts too)."""
    found = [c for c in (_check(report, i) for i in ids) if c is not None]
    if not found or found[0].verdict == Verdict.NOT_TESTED:
        return "not_tested"
    if any(c.verdict == Verdict.ERROR for c in found):
        return "invalid"
    return "none" if found[0].verdict == Verdict.NOTICE else "ok"


class Survey:
    """Surveys one domain at a time (many at once, by the caller); one instance per survey."""

    def __init__(self, settings: Settings, dns_: SurveyDns):
        self.settings = settings
        self.dns = dns_
        self.gateway = set(settings.gateway.mx)

    async def domain(self, domain: str, move: MoveSeen | None = None) -> DomainSurvey:
        checks = DomainChecks(self.settings, self.dns)
        report = await checks.run(DomainCheckQuery(domain))
        answers = self.dns.answers.pop(domain, [])
        found = DomainSurvey(domain, SurveyClass.BROKEN, "", servers=answers, move=move)
        found.spf = _record(report, "spf.record", "spf.lookups")
        spf = _check(report, "spf.record")
        found.spf_record = spf.observed[0][:500] if spf and spf.observed and found.spf != "none" else ""
        gateway = _check(report, "spf.gateway")
        if gateway is not None and gateway.verdict != Verdict.NOT_TESTED:
            found.spf_gateway = gateway.verdict == Verdict.OK
        found.dmarc = _record(report, "dmarc.record")
        dmarc = _check(report, "dmarc.record")
        if found.dmarc == "ok" and dmarc is not None:
            found.dmarc_policy = dmarc.summary.removeprefix("DMARC policy ").split(" ")[0]
        found.hazards = [
            c.summary
            for c in report.checks
            if c.id in ("mta_sts.policy", "dane.tlsa") and c.verdict in (Verdict.WARNING, Verdict.ERROR)
        ]
        served = [a for a in answers if a.mx is not None]
        if served:
            found.mx, found.mx_ttl = list(mx_key(served[0].mx)), max(a.ttl for a in served)
        found.reason = self.broken(report, answers)
        if not found.reason:
            await self.placed(found)
        return found

    def broken(self, report: Report, answers: list[ServerAnswer]) -> str:
        """Why a move of the domain would fail at its first DNS read, or ''."""
        zone = _check(report, "dns.zone")
        problems = [a.problem for a in answers if a.problem]
        if problems:
            return "; ".join(problems)
        if zone is None or (zone.verdict in (Verdict.ERROR, Verdict.NOT_TESTED) and not answers):
            detail = (zone.reason or "; ".join(zone.observed)) if zone else ""
            return f"{zone.summary if zone else 'no DNS answer'}: {detail}".rstrip(": ")
        if zone.verdict == Verdict.ERROR:  # the servers disagree
            return f"{zone.summary}: {'; '.join(zone.observed)}"
        return ""

    async def placed(self, found: DomainSurvey) -> None:
        """The class of a domain whose servers answered, from the MX set they serve."""
        mx, move = found.mx, found.move
        hosts = {r.exchange for r in mx if not is_root(r.exchange)}
        own = sorted(hosts - self.gateway)
        moved = move is not None and move.state == MoveState.DONE
        if is_null_mx(mx):
            if len(mx) == 1:
                found.survey_class, found.reason = SurveyClass.NO_MAIL, "a null MX (RFC 7505): it accepts no mail"
            else:
                found.reason = "a null MX beside other MX records, which RFC 7505 forbids"
        elif not mx:
            try:
                addresses = await self.dns.addresses(found.domain)
            except TIMEOUTS as exc:
                found.reason = f"its addresses: no answer in time ({exc})"
                return
            if addresses:
                found.survey_class, found.implicit_mx = SurveyClass.NOT_YET, True
                found.reason = f"no MX: mail goes to its address {addresses[0]} (implicit MX, RFC 5321 §5.1)"
            else:
                found.survey_class, found.reason = SurveyClass.NO_MAIL, "no MX and no address"
        elif hosts == self.gateway:
            found.survey_class, found.reason = SurveyClass.BEHIND, "the MX set is exactly the gateway hosts"
        elif hosts & self.gateway or moved:
            found.survey_class = SurveyClass.PARTLY
            if moved and own:
                found.reason = f"{', '.join(own)} left in the MX set from the move {move.id} (done)"
            elif own:
                found.reason = f"the gateway hosts and the department's own {', '.join(own)} mixed"
            else:
                found.reason = f"only {len(hosts)} of the {len(self.gateway)} gateway hosts"
        else:
            found.survey_class = SurveyClass.NOT_YET
            found.reason = f"the department's own MX: {', '.join(own)}"
            preferred = min(mx, key=lambda r: (r.preference, r.exchange)).exchange
            try:
                found.legacy_mx = to_alabel(preferred)  # a wave row's, validated as `wave start` will
            except BadName as exc:
                found.reason += f"; its MX host is no host name a move takes: {exc}"
