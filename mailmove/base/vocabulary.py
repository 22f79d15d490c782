"""The names mailmove's moves are told by: kinds, stages, states and verdicts, each in one place.

Each is a StrEnum, so a member is its own string: it crosses the Temporal boundary, reaches the
store and the JSON of the CLI and the API as the plain name, and compares equal to a name read
back from any of them. The names are in stored histories and database rows: never rename one.
"""

from enum import StrEnum


class Kind(StrEnum):
    """What a workflow is about: a move of a domain or of a server, or a wave of moves. A move's
    kind is its `MigrationKind` search attribute, a wave row's `kind` and a check report's."""

    DOMAIN = "domain"
    SERVER = "server"
    WAVE = "wave"


MOVE_KINDS = (Kind.DOMAIN, Kind.SERVER)


class Stage(StrEnum):
    """The stages of both moves; DOMAIN_STAGES and SERVER_STAGES give each move's in order."""

    PREFLIGHT = "preflight"
    # a domain move
    ADD_GATEWAY_MX = "add_gateway_mx"
    REQUEST_DOMAIN = "request_domain"
    AWAIT_REGISTRATION = "await_registration"
    REMOVE_LEGACY_MX = "remove_legacy_mx"
    AWAIT_PROPAGATION = "await_propagation"
    # a server move
    REQUEST_TSL = "request_tsl"
    AWAIT_TSL = "await_tsl"
    OPEN_FIREWALL = "open_firewall"
    RELAY_TEST = "relay_test"
    CONFIGURE_MTA = "configure_mta"  # opt-in: the host agent sets the relay in Postfix's main.cf
    AWAIT_CUTOVER = "await_cutover"
    REMOVE_OLD_TSL = "remove_old_tsl"
    DONE = "done"


DOMAIN_STAGES = (
    Stage.PREFLIGHT,
    Stage.ADD_GATEWAY_MX,
    Stage.REQUEST_DOMAIN,
    Stage.AWAIT_REGISTRATION,
    Stage.REMOVE_LEGACY_MX,
    Stage.AWAIT_PROPAGATION,
    Stage.DONE,
)

SERVER_STAGES = (
    Stage.PREFLIGHT,
    Stage.REQUEST_TSL,
    Stage.AWAIT_TSL,
    Stage.OPEN_FIREWALL,
    Stage.RELAY_TEST,
    Stage.CONFIGURE_MTA,
    Stage.AWAIT_CUTOVER,
    Stage.REMOVE_OLD_TSL,
    Stage.DONE,
)


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class MoveState(StrEnum):
    """The migration as a whole, as shown in lists and the `MigrationState` search attribute."""

    RUNNING = "running"
    WAITING = "waiting"
    NEEDS_ATTENTION = "needs_attention"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"


ENDED = (MoveState.DONE, MoveState.FAILED, MoveState.CANCELLED)  # a move's end states: it no longer moves


class RowState(StrEnum):
    """A wave row: its move's end state once it has one (a running move's stage is its own)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # not started: the subject was moving already


class AddressState(StrEnum):
    """One listed address of a domain move, on its way onto the gateway's Whitelist."""

    PENDING = "pending"
    FILED = "filed"
    ACCEPTED = "accepted"  # the gateway takes mail for it
    REFUSED = "refused"  # 5xx: not on the Whitelist
    DEFERRED = "deferred"  # 4xx: ask again later
    LOST = "lost"  # refused, and accepted as lost by a postmaster


class Action(StrEnum):
    """What an event of a move's audit trail records."""

    STAGE_STARTED = "stage started"
    STAGE_DONE = "stage done"
    STAGE_SKIPPED = "stage skipped"
    WAITING = "waiting"  # for a person, a server, a cache
    REMINDER = "reminder"
    ESCALATED = "escalated"  # the move needs attention
    CONFIRM = "confirm"
    EXTEND = "extend"
    CANCEL = "cancel"
    ALERT = "alert"
    WARNING = "warning"
    CHANGED = "changed"  # on a server, by the host agent: what was there before, and what is now
    FAILED = "failed"
    CANCELLED = "cancelled"
    DONE = "done"


class Event(StrEnum):
    """Why a move's contact is e-mailed."""

    WAITING = "waiting"  # a person's step waits
    OVERDUE = "overdue"
    DONE = "done"
    DRIFT = "drift"  # a finished move's guard found what was not there at `done`


class Verdict(StrEnum):
    """A check's verdict, in order of concern (`not_tested` says why: a timeout is no failure)."""

    OK = "ok"
    NOTICE = "notice"
    NOT_TESTED = "not_tested"
    WARNING = "warning"
    ERROR = "error"


class CheckStage(StrEnum):
    """The MX plan a domain is checked against: before, during or after its move."""

    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


class RelayVerdict(StrEnum):
    """How a relay test ended."""

    PASSED = "passed"
    RETRY = "retry"  # a temporary refusal or a broken connection
    UNREACHABLE = "unreachable"
    RELAY_DENIED = "relay_denied"  # the RCPT refused: the list entry does not work (yet)
    TLS_REFUSED = "tls_refused"
    CERTIFICATE = "certificate"
    SENDER_REJECTED = "sender_rejected"
    REJECTED = "rejected"


class RelayScope(StrEnum):
    """The three relays of the gateway: what a server may send through, and its list."""

    EXTERNAL = "external"  # mailout: TLS, anywhere; the TrustedServerList
    INTERNAL = "internal"  # mailout-intern: campus addresses only, no list
    UNSECURE = "unsecure"  # mailout-unsecure: no TLS, campus only; the MailOut-Unsecure list


class DnsMode(StrEnum):
    RFC2136 = "rfc2136"  # mailmove updates the zone
    CENTRE = "centre"  # a person at the centre does, from the lines shown


class PortalMode(StrEnum):
    MANUAL = "manual"  # a person files the form shown and confirms
    HTTP = "http"  # mailmove files over the portal's HTTP API


class Request(StrEnum):
    """What is filed with the centre: the `kind` of a portal request."""

    DOMAIN = "domain"
    WHITELIST = "wl"  # one an address
    TSL = "tsl"
    TSL_REMOVAL = "tsl-removal"
    UNSECURE = "unsecure"
    UNSECURE_REMOVAL = "unsecure-removal"


class RequestState(StrEnum):
    """A portal request in the store: written before it is sent, and again once answered."""

    SUBMITTING = "submitting"
    FILED = "filed"


PORTAL_CONFIRMED = "confirmed"  # the portal's status of a request the centre has carried out (its other ones vary)


class SurveyClass(StrEnum):
    """Where `mailmove survey` finds a domain against the gateway's rules, in order of how far along it is."""

    BEHIND = "behind"  # the MX set is exactly the gateway hosts
    PARTLY = "partly"  # gateway hosts and the department's own mixed, or an old MX left from a move
    NOT_YET = "not_yet"  # the department's own MX only (or none, with an address: implicit MX)
    NO_MAIL = "no_mail"  # a null MX (RFC 7505), or no MX and no address
    BROKEN = "broken"  # its DNS does not answer as it must: lame servers, SERVFAIL, timeouts
