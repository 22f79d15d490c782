"""The guard of a finished move: its wire types, and what it checks, taken from the move's input.

When a move reaches `done`, a Temporal Schedule starts `GuardWorkflow` with a `GuardInput` every
`guard.interval`: the stage-`after` checks again, against what the move left in force (the
gateway hosts, the relay, the host agent's queue), so a later change of the configuration does not
alter what a guard compares with. Annotations are evaluated at import, as in model.py.
"""

from dataclasses import dataclass, field

from mailmove.base.model import DomainMoveInput, Notice, RelayTestQuery, ServerMoveInput, Timings
from mailmove.base.report import Check, DomainCheckQuery, Report, ServerCheckQuery
from mailmove.base.vocabulary import CheckStage, Kind

GUARD_WORKFLOW = "GuardWorkflow"  # the workflow type a schedule starts (activities name it, never import it)


@dataclass
class GuardInput:
    workflow_id: str  # the move's
    kind: str  # a Kind: domain | server
    subject: str
    contact: str = ""  # mailed once per distinct drift
    domain: DomainCheckQuery | None = None
    server: ServerCheckQuery | None = None
    relay: RelayTestQuery | None = None  # the relay test, run through the host agent when one polls
    agent_queue: str = ""
    agent_wait: float = 60.0  # the relay test waits this long for an agent (`guard.agent_wait`); none: not tested
    timings: Timings = field(default_factory=Timings)


@dataclass
class GuardRun:
    """One run's report, handed to the store to be judged against the move's baseline."""

    workflow_id: str  # the move's
    report: Report
    contact: str = ""


@dataclass
class GuardVerdict:
    drift: list[Check]  # findings that were not there at `done`
    fingerprint: str  # of the drifting findings' ids and verdicts; "" without drift
    notice: Notice | None = None  # the mail to send: a drift not mailed yet


@dataclass
class GuardMailed:
    workflow_id: str
    fingerprint: str


@dataclass
class GuardResult:
    """What a run found, as its workflow's result (`temporal workflow show`)."""

    subject: str
    worst: str  # of the run's report
    drift: list[str]  # the drifting checks' ids
    mailed: bool
    note: str = ""  # what did not happen (the relay test, the mail), and why


def domain_guard(wid: str, args: DomainMoveInput) -> GuardInput:
    """A domain's guard: exactly the move's gateway hosts on every authoritative server, SPF, DMARC, MTA-STS."""
    query = DomainCheckQuery(args.domain, CheckStage.AFTER, list(args.gateway_mx), args.gateway_preference)
    return GuardInput(wid, Kind.DOMAIN, args.domain, args.contact, domain=query, timings=args.timings)


def server_guard(wid: str, args: ServerMoveInput) -> GuardInput:
    """A server's guard: FCrDNS, STARTTLS and the certificate's days, and the relay test (no DATA)
    through the move's host agent."""
    addresses = [a for a in (args.new_ipv4, args.new_ipv6) if a]
    relay = RelayTestQuery(args.relay, args.new_fqdn, args.mail_from, args.rcpt, args.new_ipv4, send=False)
    return GuardInput(
        wid,
        Kind.SERVER,
        args.new_fqdn,
        args.entry.contact,
        server=ServerCheckQuery(args.new_fqdn, addresses),
        relay=relay if args.agent_queue else None,
        agent_queue=args.agent_queue,
        timings=args.timings,
    )


def stored_guard(wid: str, kind: str, subject: str, timings: Timings) -> GuardInput:
    """The guard of a move whose input Temporal no longer holds: the checks against this
    configuration's gateway profile, no contact, no host agent."""
    if kind == Kind.DOMAIN:
        return GuardInput(wid, kind, subject, domain=DomainCheckQuery(subject, CheckStage.AFTER), timings=timings)
    return GuardInput(wid, kind, subject, server=ServerCheckQuery(subject), timings=timings)
