"""Typed arguments and results shared by workflows, activities, the store and the CLI.

Everything here crosses the Temporal boundary, so it is plain dataclasses of JSON-friendly
values: times are timezone-aware datetimes, durations are seconds (float), sets are lists.
Secrets never appear here: a zone's TSIG key is looked up by the worker from its own config.

The annotations are evaluated at import (no `from __future__ import annotations`): the data
converter reads every dataclass's type hints on each conversion, and string annotations
would be compiled again each time (7x the cost: 228 µs against 31 µs for a `Transition`).
"""

from dataclasses import dataclass, field
from datetime import datetime

from mailmove.base.vocabulary import MoveState, RelayVerdict, RowState, StageState


@dataclass(frozen=True, order=True)
class MxRecord:
    preference: int
    exchange: str  # absolute A-label name without the trailing dot, lower case

    def __str__(self) -> str:
        return f"{self.preference} {self.exchange.rstrip('.')}."  # the root (null MX, RFC 7505): "0 ."


def mx_key(records: list[MxRecord]) -> tuple[MxRecord, ...]:
    """Canonical form of an MX RRset: the criterion of the propagation rule is set equality."""
    return tuple(sorted(set(records)))


@dataclass
class Timings:
    """Every wait of the domain move, in seconds; the defaults suit a real move over days."""

    probe_interval: float = 3600.0  # registration detection and portal status polls
    reminder_interval: float = 86400.0
    escalate_after: float = 7 * 86400.0  # then the move "needs attention" (and keeps waiting)
    convergence_window: float = 60.0  # one activity polls the authoritative servers this long
    convergence_poll: float = 1.0  # seconds between rounds inside that activity
    convergence_pause: float = 60.0  # durable timer between two windows
    convergence_escalate_after: float = 3600.0
    centre_poll: float = 300.0  # centre mode: poll the authoritative servers this often
    # start-to-close: how long one attempt may take before it is given up as hung (docs/recovery.md
    # lists the measured durations); every one of these activities beats every second, so a lost
    # worker is noticed after `heartbeat_timeout`, not after these
    dns_timeout: float = 60.0
    portal_timeout: float = 90.0
    probe_timeout: float = 180.0
    heartbeat_timeout: float = 5.0
    # schedule-to-close: a stage's activity is retried (without an attempt cap) this long, then
    # the stage needs attention; a registration source's answer, retries included, this long
    retry_limit: float = 600.0
    detect_timeout: float = 240.0  # a probe asks each gateway MX in turn: 30 s a silent address
    # server move: the relay test is repeated with backoff until the TSL entry works
    relay_retry_initial: float = 60.0
    relay_retry_max: float = 3600.0
    relay_test_limit: float = 3 * 86400.0  # then the stage needs attention
    agent_timeout: float = 120.0  # one firewall change, relay test or Postfix change on the host agent
    check_timeout: float = 120.0  # one run of `mailmove check` (DNS, SPF includes, SMTP, MTA-STS)


@dataclass
class DomainMoveInput:
    domain: str  # A-label
    legacy_mx: str  # A-label
    gateway_mx: list[str]
    gateway_preference: int = 10
    legacy_preference: int = 5
    gateway_smtp_port: int = 25
    dns_mode: str = "rfc2136"  # or "centre"
    portal_mode: str = "manual"  # or "http"
    portal_form: str = ""  # the form a postmaster files by hand in manual mode
    addresses: list[str] = field(default_factory=list)  # externally reachable: Whitelist entries
    external: bool = True  # False: the domain receives nothing from outside (--no-external)
    wl_form: str = ""
    probe_rate: float = 10.0  # RCPTs a second when the gateway is asked about the addresses
    timings: Timings = field(default_factory=Timings)
    requested_by: str = ""
    domain_display: str = ""  # U-label form, for people
    contact: str = ""  # who is told by e-mail when a person's step waits, is overdue, and at the end


@dataclass
class Relay:
    host: str  # A-label name (or an address literal)
    port: int
    tls: bool  # STARTTLS with TLS 1.2 or newer required (mailout, mailout-intern)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class TslEntry:
    """What the centre's TrustedServerList (or MailOut-Unsecure list) form asks for."""

    institution: str
    admins: list[str]  # TU-IDs, at least two
    contact: str
    sender_domains: list[str]  # A-labels

    def problems(self) -> list[tuple[str, str]]:
        """(field, what to fix) for each part the centre's form needs and this entry lacks."""
        found = []
        if not self.institution.strip():
            found.append(("institution", "the name of the institution is required"))
        if len({a.strip().lower() for a in self.admins if a.strip()}) < 2:
            found.append(("admin", "name at least two admins by their TU-ID (the centre removes orphaned entries)"))
        if not self.contact.strip():
            found.append(("contact", "a contact address for technical questions is required"))
        if not self.sender_domains:
            found.append(("sender_domain", "name the mail domains the server sends from"))
        return found


@dataclass
class ServerMoveInput:
    old_fqdn: str  # A-label
    new_fqdn: str  # A-label
    new_ipv4: str
    new_ipv6: str
    relay_scope: str  # a RelayScope
    relay: Relay
    entry: TslEntry
    mail_from: str  # the envelope sender of the relay test: an address that receives mail
    rcpt: str  # the relay test's recipient
    gateway_networks: list[str]
    internal_relay_addresses: list[str]
    send: bool = False  # the relay test also sends a message (DATA)
    agent_queue: str = ""  # the host agent's task queue; empty: firewall and relay test by hand
    configure_mta: bool = False  # the host agent sets the relay in Postfix's main.cf (needs `agent_queue`)
    portal_mode: str = "manual"
    tsl_form: str = ""
    unsecure_form: str = ""
    timings: Timings = field(default_factory=Timings)
    requested_by: str = ""


@dataclass
class ServerQuery:
    fqdn: str
    ipv4: str
    ipv6: str
    sender_domains: list[str]
    old_fqdn: str


@dataclass
class AddressCheck:
    address: str
    ptr: list[str]
    ok: bool  # a PTR names the server and that name resolves back to the address


@dataclass
class ServerIdentity:
    """Preflight of a server move: forward-confirmed reverse DNS and the sender domains."""

    forward: list[str]
    reverse: list[AddressCheck]
    old_addresses: list[str]
    problems: list[str]  # each says what to fix; empty when all is well


@dataclass
class FirewallPlan:
    """tcp/25 in from `inbound`, out to `outbound`: the gateway's rules for one server."""

    server: str
    inbound: list[str]
    outbound: list[str]


@dataclass
class FirewallRules:
    nftables: str
    iptables: str
    ufw: str


@dataclass
class FirewallChange:
    changed: bool
    added: list[str]  # "in 130.83.156.224/27", "out 2001:41b8:83f:1610::/63", ...
    removed: list[str]
    detail: str


@dataclass
class RelayTestQuery:
    relay: Relay
    helo: str
    mail_from: str
    rcpt: str
    source: str = ""  # bind to this local address (the server's own outbound address)
    send: bool = False
    probe_id: str = ""
    envelope: bool = True  # False: stop after STARTTLS and the second EHLO (a server's own check)


@dataclass
class SmtpStep:
    step: str  # banner, ehlo, starttls, tls, ehlo, mail, rcpt, data, quit
    sent: str  # the command line as sent ("" for the banner and the handshake)
    code: int | None
    reply: str
    ok: bool


@dataclass
class TlsSession:
    version: str
    cipher: str
    fingerprint: str  # SHA-256 of the relay's certificate
    subject: str
    not_after: str


@dataclass
class RelayTranscript:
    relay: str
    source: str
    verdict: str  # a RelayVerdict
    cause: str  # one line in the postmaster's terms
    steps: list[SmtpStep]
    tls: TlsSession | None = None
    queue_id: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == RelayVerdict.PASSED


@dataclass
class PostfixCheck:
    expected: dict[str, str]
    actual: dict[str, str]
    mismatches: list[str]  # the lines to set
    note: str = ""  # why nothing could be read, if so


@dataclass
class PostfixChange:
    """The relay lines set in (or restored to) main.cf by the host agent."""

    changed: bool  # False: main.cf already had the values, nothing was edited or reloaded
    previous: dict[str, str | None]  # main.cf's own values before mailmove first changed them; None: not set
    values: dict[str, str | None]  # what main.cf says now for the names set or restored
    detail: str


@dataclass
class MtaProbe:
    """A probe message submitted to the mail server's own Postfix, for its relay to take."""

    mail_from: str
    rcpt: str
    probe_id: str  # a UUID: in the Message-ID and a header of its own


@dataclass
class MtaProbeResult:
    queue_id: str  # the local Postfix's
    message_id: str
    relay: str  # as Postfix's log names it: `host[address]:port`
    answer: str  # the relay's reply to the message, e.g. "250 2.0.0 Ok: queued as 4dQ1..."


@dataclass
class ZoneQuery:
    domain: str


@dataclass
class ZoneSnapshot:
    """What preflight saw: enough to roll back and to apply the propagation rule."""

    zone: str
    authoritative: list[str]  # "ip:port" of every authoritative address
    mx: list[MxRecord]
    mx_ttl: int  # TTL of the current MX RRset (0 when there is none)
    negative_ttl: int  # min(SOA MINIMUM, SOA TTL), RFC 2308
    serial: int


@dataclass
class HostQuery:
    host: str


@dataclass
class HostAddresses:
    host: str
    addresses: list[str]


@dataclass
class MxChange:
    """Replace the MX RRset of `domain` by `target`, if it currently is one of `accept`.

    Idempotent: a set already equal to `target` is left alone, so a retry or a replay never
    changes DNS twice.
    """

    domain: str
    zone: str
    target: list[MxRecord]
    accept: list[list[MxRecord]]
    ttl: int


@dataclass
class MxChangeResult:
    changed: bool
    before: list[MxRecord]
    serial: int  # the primary's serial after the change


@dataclass
class ConvergenceQuery:
    domain: str
    zone: str
    authoritative: list[str]
    target: list[MxRecord]
    window: float  # seconds to keep polling before reporting "not yet"
    poll: float


@dataclass
class ServerView:
    address: str
    ok: bool  # AA, NOERROR and exactly the target set
    mx: list[MxRecord]
    serial: int | None
    error: str = ""


@dataclass
class ConvergenceReport:
    converged: bool  # returned as soon as every server agrees, so its arrival time is T_conv
    servers: list[ServerView]


@dataclass
class ResolverQuery:
    domain: str
    target: list[MxRecord]


@dataclass
class ResolverView:
    resolver: str
    serves_target: bool
    mx: list[MxRecord]
    ttl: int | None  # remaining TTL of the answer: when this resolver asks again at the latest
    error: str = ""


@dataclass
class PortalFiling:
    """One request to the centre; `key` makes it idempotent across retries and replays."""

    key: str
    workflow_id: str
    kind: str  # a Request
    subject: str
    values: dict[str, str]


@dataclass
class WhitelistFiling:
    key: str  # with each address, the idempotency key of its entry
    workflow_id: str
    domain: str
    addresses: list[str]


@dataclass
class PortalReceipt:
    key: str
    reference: str
    status: str  # "received", "confirmed", ...


@dataclass
class ProbeQuery:
    hosts: list[str]  # tried in order; the first that answers decides
    port: int
    rcpt: str


@dataclass
class ProbeResult:
    accepted: bool
    host: str
    code: int | None
    message: str


@dataclass
class AddressProbe:
    hosts: list[str]  # the gateway MX hosts, tried in order; the first that answers checks all
    port: int
    addresses: list[str]
    rate: float = 10.0  # RCPTs a second at most, so the gateway is not hammered
    batch: int = 100  # recipients per transaction


@dataclass
class AddressVerdict:
    address: str
    state: str  # an AddressState
    code: int | None
    message: str


@dataclass
class AddressReport:
    host: str
    verdicts: list[AddressVerdict]


@dataclass
class Transition:
    """One line of the audit trail, and the read model's new state of the migration."""

    event_id: str  # deterministic per workflow (workflow.uuid4), so a retried write is a no-op
    seq: int  # order within the workflow: events of one workflow task share their time
    workflow_id: str
    kind: str
    subject: str
    at: datetime
    stage: str
    state: str  # a MoveState
    action: str  # an Action
    actor: str = "mailmove"
    detail: str = ""
    result: str = ""
    attention: bool = False


@dataclass
class StageStatus:
    name: str
    state: StageState = StageState.PENDING
    started: datetime | None = None
    ended: datetime | None = None
    attempts: int = 0
    last_error: str = ""
    waiting_for: str = ""
    eta: datetime | None = None
    detail: str = ""


@dataclass
class MoveStatus:
    workflow_id: str
    kind: str
    subject: str
    state: MoveState
    stage: str
    attention: bool
    stages: list[StageStatus]
    eta: datetime | None = None
    original_mx: list[MxRecord] = field(default_factory=list)
    target_mx: list[MxRecord] = field(default_factory=list)
    records_to_set: list[str] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    resolvers: list[ResolverView] = field(default_factory=list)
    authoritative: list[ServerView] = field(default_factory=list)
    message: str = ""
    addresses: list[AddressVerdict] = field(default_factory=list)  # each listed address's state
    # server moves
    identity: ServerIdentity | None = None
    firewall: FirewallRules | None = None
    firewall_change: FirewallChange | None = None
    postfix: list[str] = field(default_factory=list)  # the MTA's lines for the chosen relay
    other_mtas: dict[str, list[str]] = field(default_factory=dict)  # Exim's, Sendmail's, OpenSMTPD's lines
    postfix_check: PostfixCheck | None = None
    transcript: RelayTranscript | None = None
    postfix_change: PostfixChange | None = None  # configure_mta's change of main.cf (or, cancelled, its undoing)
    mta_probe: MtaProbeResult | None = None  # the probe message through the local Postfix
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # stage -> summary of its stored check report


@dataclass
class Notice:
    """One e-mail to a move's contact; `key` makes it once-only and gives its Message-ID."""

    key: str
    workflow_id: str
    event: str  # an Event
    to: str
    subject: str
    body: str


@dataclass
class ConfirmInput:
    stage: str
    actor: str
    note: str = ""
    lost: list[str] = field(default_factory=list)  # refused addresses a postmaster accepts as lost


@dataclass
class ExtendInput:
    seconds: float
    actor: str
    note: str = ""


@dataclass
class CancelInput:
    actor: str
    note: str = ""


@dataclass
class MoveResult:
    state: MoveState
    message: str


# -- waves ------------------------------------------------------------------------------------


@dataclass
class WaveRow:
    line: int  # in the CSV file, for people
    kind: str  # Kind.DOMAIN or Kind.SERVER
    subject: str  # the domain, or the new server's FQDN
    workflow_id: str
    domain_move: DomainMoveInput | None = None
    server_move: ServerMoveInput | None = None


@dataclass
class WaveInput:
    """The rows themselves wait in the store under `batch` (one oversized input would not do
    for a wave of thousands); the workflow reads them in pages."""

    name: str
    batch: str
    total: int
    concurrency: int  # children running at once, at most
    rate: float  # children started a minute, at most
    requested_by: str = ""


@dataclass
class RowPage:
    batch: str
    after: int  # the last line of the previous page (0 for the first)
    size: int


@dataclass
class RowProgress:
    line: int
    kind: str
    subject: str
    workflow_id: str
    state: str = RowState.PENDING  # a running child's stage is in its own status
    started: datetime | None = None
    ended: datetime | None = None
    message: str = ""


@dataclass
class WaveStatus:
    name: str
    total: int
    concurrency: int
    rate: float
    rows: list[RowProgress]  # empty until the workflow has read its rows from the store
    finished: bool = False

    def counts(self) -> dict[str, int]:
        return {s: n for s in RowState if (n := sum(r.state == s for r in self.rows))}
