"""The host agent's arguments, checked on the agent before anything runs.

The agent runs as root on a mail server and takes its arguments from whoever can schedule on
its task queue, so nothing in them is trusted: names must already be A-labels, addresses and
networks must parse strictly, no string may hold quotes, backslashes, whitespace or control
characters (syntax to nft, Postfix or SMTP), and a firewall plan may open tcp/25 only to the
agent's own allowed networks. A refusal names the field; the value is shown only as a
truncated repr, so a hostile one cannot forge log lines.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from email_validator import EmailNotValidError, validate_email
from temporalio.exceptions import ApplicationError

from mailmove.base.model import FirewallPlan, MtaProbe, Relay, RelayTestQuery
from mailmove.base.names import BadName, is_address, to_alabel

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger("mailmove.agent")

MAX_NETWORKS = 64  # per direction; the gateway's plan has six
_IP_CHARS = re.compile(r"[0-9A-Fa-f:./]{1,64}")  # no zone index (`%eth0`), no spaces
_PROBE_ID = re.compile(r"[A-Za-z0-9-]{0,64}")  # a UUID; it goes into the test message's headers


class Refused(ValueError):
    """An argument the agent will not act on; `field` names it, e.g. `plan.inbound[2]`."""

    def __init__(self, field: str, value: object, reason: str):
        super().__init__(f"{field}: {shown(value)} {reason}")
        self.field = field


def shown(value: object) -> str:
    """The value for a log line or an error: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@contextmanager
def refusing(activity_name: str) -> Iterator[None]:
    """A Refused check becomes the activity's non-retryable `AgentRefused` failure, logged once."""
    try:
        yield
    except Refused as exc:
        log.warning("%s refused %s", activity_name, exc)
        raise ApplicationError(
            f"{activity_name} refused {exc}", exc.field, type="AgentRefused", non_retryable=True
        ) from None


def text(field: str, value: object, limit: int = 253) -> str:
    if not isinstance(value, str):
        raise Refused(field, value, "is not a string")
    if not value or len(value) > limit:
        raise Refused(field, value, f"must have 1 to {limit} characters")
    if bad := next((c for c in value if c in "'\"\\" or c.isspace() or not c.isprintable()), None):
        raise Refused(field, value, f"holds {bad!r}: no quotes, backslashes, whitespace or control characters")
    return value


def host_name(field: str, value: object) -> None:
    """A host name as DNS carries it: already the lower-case A-label, no trailing dot."""
    name = text(field, value)
    try:
        canonical = to_alabel(name)
    except BadName:
        canonical = ""
    if canonical != name:
        raise Refused(field, value, "is not a host name in A-label form")


def address(field: str, value: object) -> None:
    if not _IP_CHARS.fullmatch(text(field, value)) or not is_address(value):
        raise Refused(field, value, "is not an IP address")


def network(field: str, value: object) -> Network:
    """A network (or a single address) without host bits set beyond its prefix."""
    if _IP_CHARS.fullmatch(text(field, value)):
        try:
            return ipaddress.ip_network(value)
        except ValueError:
            pass
    raise Refused(field, value, "is not an IP network such as 130.83.156.224/27")


def host(field: str, value: object) -> None:
    """A host name, or an address literal."""
    if is_address(text(field, value)):
        address(field, value)
    else:
        host_name(field, value)


def port(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise Refused(field, value, "is not a port from 1 to 65535")


def flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise Refused(field, value, "is not true or false")


def mailbox(field: str, value: object) -> None:
    """An address as SMTP carries it (ASCII local part); no DNS lookup."""
    try:
        validate_email(text(field, value, 254), check_deliverability=False, allow_smtputf8=False, test_environment=True)
    except EmailNotValidError as exc:
        raise Refused(field, value, f"is not an e-mail address: {exc}") from None


def networks(field: str, values: object, allowed: Sequence[Network] | None) -> None:
    """Each must lie inside one of `allowed` (None: anywhere, for a plan that is only closed)."""
    if not isinstance(values, list) or len(values) > MAX_NETWORKS:
        raise Refused(field, values, f"is not a list of at most {MAX_NETWORKS} networks")
    for i, value in enumerate(values):
        net = network(f"{field}[{i}]", value)
        if allowed is not None and not any(net.version == a.version and net.subnet_of(a) for a in allowed):
            raise Refused(f"{field}[{i}]", value, "is outside the agent's allowed networks")


def firewall_plan(plan: FirewallPlan, allowed: Sequence[Network] | None = None) -> None:
    host_name("plan.server", plan.server)
    networks("plan.inbound", plan.inbound, allowed)
    networks("plan.outbound", plan.outbound, allowed)


def relay(field: str, value: Relay) -> None:
    host(f"{field}.host", value.host)
    port(f"{field}.port", value.port)
    flag(f"{field}.tls", value.tls)


def configured_relay(field: str, value: Relay, relays: Sequence[Relay]) -> None:
    """One of the gateway's relays of the agent's own configuration, whoever names it."""
    relay(field, value)
    if value not in relays:
        raise Refused(field, str(value), "is not one of the gateway's relays in the agent's configuration")


def probe_id(field: str, value: object) -> None:
    if not isinstance(value, str) or not _PROBE_ID.fullmatch(value):
        raise Refused(field, value, "is not a probe id (up to 64 letters, digits and '-')")


def relay_test_query(query: RelayTestQuery, relays: Sequence[Relay]) -> None:
    """The test goes to one of the configured gateway relays only: the agent connects from the
    mail server's own address, and with `send` submits a message there."""
    configured_relay("query.relay", query.relay, relays)
    host_name("query.helo", query.helo)
    mailbox("query.mail_from", query.mail_from)
    mailbox("query.rcpt", query.rcpt)
    if query.source != "":
        address("query.source", query.source)
    flag("query.send", query.send)
    flag("query.envelope", query.envelope)
    probe_id("query.probe_id", query.probe_id)


def mta_probe(probe: MtaProbe) -> None:
    """The probe message goes to the local Postfix only (the agent's configured port); these are
    its envelope and its id."""
    mailbox("probe.mail_from", probe.mail_from)
    mailbox("probe.rcpt", probe.rcpt)
    probe_id("probe.probe_id", probe.probe_id)
