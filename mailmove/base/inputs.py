"""Everything a start request must pass before a workflow exists: names, the gateway's rules,
the TSIG key, and that every configured server the move needs answers.

Shared by the CLI and the dashboard; each failure names the field to fix.
"""

from __future__ import annotations

import asyncio
import ipaddress
import unicodedata
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import httpx
from email_validator import EmailNotValidError, validate_email

from mailmove.base.addresses import parse_addresses, read_addresses
from mailmove.base.config import HostPort, Settings, SmtpConfig, parse_host_port, read_tsig_keyfile
from mailmove.base.errors import BadInput, ConfigError
from mailmove.base.model import DomainMoveInput, Relay, RelayTestQuery, ServerMoveInput, TslEntry
from mailmove.base.names import BadName, is_address, to_alabel, to_ulabel
from mailmove.base.temporal import host_queue
from mailmove.base.vocabulary import DnsMode, PortalMode, RelayScope

DNS_MODES = tuple(DnsMode)
PORTAL_MODES = tuple(PortalMode)
TEXT_LIMIT = 200  # characters of a name-like free text: an institution, a token's name
NOTE_LIMIT = 2000  # characters of a note on a confirm, extend or cancel
TUID_LIMIT = 32
MAX_LIST = 100  # sender domains or admins of one server: each is a DNS lookup or a portal field
# control, format (bidi overrides, zero-width), surrogate, private-use and unassigned
# characters, and the line and paragraph separators
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_MARKUP = "<>"


@dataclass
class DomainMoveRequest:
    domain: str
    legacy_mx: str
    dns_mode: str = "rfc2136"
    portal_mode: str = ""  # empty: the configured mode
    legacy_preference: int | None = None  # None: the gateway profile's
    actor: str = ""
    addresses_file: str = ""  # the externally reachable addresses (list, virtual or aliases map)
    addresses_text: str = ""  # or the same as text (the dashboard's form and API)
    no_external: bool = False  # the domain receives nothing from outside
    contact: str = ""  # told by e-mail when a person's step waits, is overdue, and when done


@dataclass
class ServerMoveRequest:
    old: str
    new: str
    new_ipv4: str
    new_ipv6: str = ""
    relay_scope: str = "external"
    institution: str = ""
    admins: list[str] = field(default_factory=list)
    contact: str = ""
    sender_domains: list[str] = field(default_factory=list)
    mail_from: str = ""  # default: postmaster@ the first sender domain
    rcpt: str = ""  # default: the contact address
    send: bool = False
    agent: bool = True  # a host agent runs on the new server (`mailmove worker --host NEW`)
    configure_mta: bool = False  # the agent sets the relay in Postfix's main.cf (stage configure_mta)
    portal_mode: str = ""
    actor: str = ""


def text_field(field: str, text: str, limit: int = TEXT_LIMIT) -> str:
    """`text` without surrounding blanks if it is one line of printable characters, without
    markup, at most `limit` long; else a BadInput naming `field`. Free text goes to the
    centre's portal (a line break could add a field or a header), the audit history, e-mail,
    the pages and the terminal; what none of them needs is refused rather than mended."""
    value = text.strip()
    if len(value) > limit:
        raise BadInput(field, f"is {len(value)} characters long, more than {limit}")
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in _UNPRINTABLE:
            what = "a line break" if char in "\r\n\u2028\u2029\x85" else "a control or invisible character"
            raise BadInput(field, f"holds {what} (U+{ord(char):04X}) at position {position}: one line of text")
        if char in _MARKUP:
            raise BadInput(field, f"holds {char!r} at position {position}: no markup")
    return value


def name_field(field: str, text: str) -> str:
    """The A-label of `text`, or a BadInput naming `field`."""
    try:
        return to_alabel(text)
    except BadName as exc:
        raise BadInput(field, str(exc)) from None


def domain_move_input(settings: Settings, request: DomainMoveRequest) -> DomainMoveInput:
    """The workflow input, or a BadInput; no I/O (see `check_reachable` for that)."""
    gateway = settings.gateway
    domain = name_field("domain", request.domain)
    legacy = name_field("legacy_mx", request.legacy_mx)
    if legacy in gateway.mx:
        raise BadInput("legacy_mx", f"{legacy} is one of the gateway hosts; name the department's old mail server")
    preference = gateway.legacy_preference if request.legacy_preference is None else request.legacy_preference
    if not 0 <= preference < gateway.mx_preference:
        raise BadInput(
            "legacy_preference",
            f"{preference} must be below the gateway's preference {gateway.mx_preference}, "
            "so that mail keeps reaching the old server until the domain is registered",
        )
    if request.dns_mode not in DNS_MODES:
        raise BadInput("dns", f"{request.dns_mode!r} is not one of {', '.join(DNS_MODES)}")
    portal_mode = request.portal_mode or settings.portal.mode
    if portal_mode not in PORTAL_MODES:
        raise BadInput("portal", f"{portal_mode!r} is not one of {', '.join(PORTAL_MODES)}")
    if request.dns_mode == "rfc2136":
        tsig_key_for(settings, domain)
    addresses = external_addresses(request, domain)
    return DomainMoveInput(
        domain=domain,
        legacy_mx=legacy,
        gateway_mx=list(gateway.mx),
        gateway_preference=gateway.mx_preference,
        legacy_preference=preference,
        gateway_smtp_port=gateway.smtp_port,
        dns_mode=request.dns_mode,
        portal_mode=portal_mode,
        portal_form=settings.portal.form_url,
        timings=settings.timing,
        requested_by=request.actor,
        domain_display=to_ulabel(domain),
        addresses=addresses,
        external=not request.no_external,
        wl_form=settings.portal.form(settings.portal.wl_form),
        probe_rate=gateway.probe_rate,
        contact=_mailbox("contact", request.contact) if request.contact else "",
    )


def _address(field: str, text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise BadInput(field, f"{text!r} is not an IPv{version} address") from None
    if address.version != version:
        raise BadInput(field, f"{text!r} is not an IPv{version} address")
    if address.is_unspecified or address.is_multicast:
        raise BadInput(field, f"{text} cannot be a mail server's address")
    return str(address)


def address_field(field: str, text: str) -> str:
    """A mail server's IPv4 or IPv6 address."""
    return _address(field, text, 6 if ":" in text else 4)


def _mailbox(field: str, text: str) -> str:
    """An address in the form SMTP carries it; no DNS lookup here (preflight does DNS). The
    `test` TLD (RFC 6761, the sandbox's) is let through; other special-use names are not."""
    try:
        return validate_email(text, check_deliverability=False, allow_smtputf8=False, test_environment=True).normalized
    except EmailNotValidError as exc:
        raise BadInput(field, f"{text!r}: {exc}") from None


def server_move_input(settings: Settings, request: ServerMoveRequest) -> ServerMoveInput:
    """The workflow input, or a BadInput naming the option to fix; no I/O."""
    gateway = settings.gateway
    old = name_field("old", request.old)
    new = name_field("new", request.new)
    ipv4 = _address("new_ipv4", request.new_ipv4, 4)
    ipv6 = _address("new_ipv6", request.new_ipv6, 6) if request.new_ipv6 else ""
    if request.relay_scope not in tuple(RelayScope):
        raise BadInput("relay_scope", f"{request.relay_scope!r} is not one of {', '.join(RelayScope)}")
    portal_mode = request.portal_mode or settings.portal.mode
    if portal_mode not in PORTAL_MODES:
        raise BadInput("portal", f"{portal_mode!r} is not one of {', '.join(PORTAL_MODES)}")
    for name, values in (("sender_domain", request.sender_domains), ("admin", request.admins)):
        if len(values) > MAX_LIST:
            raise BadInput(name, f"{len(values)} given, at most {MAX_LIST} in one request")
    senders = list(dict.fromkeys(name_field("sender_domain", d) for d in request.sender_domains))
    entry = TslEntry(
        institution=text_field("institution", request.institution),
        admins=[text_field("admin", a, TUID_LIMIT) for a in request.admins if a.strip()],
        contact=_mailbox("contact", request.contact) if request.contact else "",
        sender_domains=senders,
    )
    for admin in entry.admins:
        if any(c.isspace() or c in "@,;" for c in admin):
            raise BadInput("admin", f"{admin!r} is not a TU-ID (give one per --admin)")
    if request.relay_scope != "internal" and (problems := entry.problems()):
        raise BadInput(*problems[0])
    if not request.mail_from and not senders:
        raise BadInput("mail_from", "give the envelope sender of the relay test (an address that receives mail)")
    mail_from = _mailbox("mail_from", request.mail_from or f"postmaster@{senders[0]}")
    if not request.rcpt and not entry.contact:
        raise BadInput("rcpt", "give the relay test's recipient (or --contact)")
    rcpt = _mailbox("rcpt", request.rcpt or entry.contact)
    if request.configure_mta and not request.agent:
        raise BadInput("configure_mta", "the host agent changes Postfix: it needs the agent on the new server")
    relay = gateway.relays()[request.relay_scope]
    return ServerMoveInput(
        old_fqdn=old,
        new_fqdn=new,
        new_ipv4=ipv4,
        new_ipv6=ipv6,
        relay_scope=request.relay_scope,
        relay=relay,
        entry=entry,
        mail_from=mail_from,
        rcpt=rcpt,
        gateway_networks=list(gateway.networks),
        internal_relay_addresses=list(gateway.internal_relay_addresses),
        send=request.send,
        agent_queue=host_queue(settings.temporal.task_queue, new) if request.agent else "",
        configure_mta=request.configure_mta,
        portal_mode=portal_mode,
        tsl_form=settings.portal.form(settings.portal.tsl_form),
        unsecure_form=settings.portal.form(settings.portal.unsecure_form),
        timings=settings.timing,
        requested_by=request.actor,
    )


def relay_test_query(
    settings: Settings,
    relay: str,
    helo: str,
    mail_from: str,
    rcpt: str,
    source: str = "",
    ca: Path | None = None,
    send: bool = False,
    tls: bool = True,
) -> tuple[RelayTestQuery, SmtpConfig]:
    """`mailmove relay-test`'s options as the test's query, and the SMTP settings to run it with."""
    try:
        target = parse_host_port(relay, 25, "relay")
    except ConfigError as exc:
        raise BadInput("relay", exc.message) from None
    host = target.host if is_address(target.host) else name_field("relay", target.host)
    if source and not is_address(source):
        raise BadInput("source", f"{source!r} is not an IP address of this machine")
    if ca is not None and not ca.is_file():
        raise BadInput("ca", f"{ca} does not exist")
    smtp = replace(settings.smtp, ca_file=str(ca)) if ca else settings.smtp
    query = RelayTestQuery(
        relay=Relay(host, target.port, tls),
        helo=name_field("helo", helo),
        mail_from=_mailbox("mail_from", mail_from),
        rcpt=_mailbox("rcpt", rcpt),
        source=source,
        send=send,
        probe_id=uuid.uuid4().hex,
    )
    return query, smtp


def external_addresses(request: DomainMoveRequest, domain: str) -> list[str]:
    """The addresses to put on the Whitelist; every bad line named, with its number."""
    given = bool(request.addresses_file) or bool(request.addresses_text.strip())
    if given and request.no_external:
        raise BadInput("addresses", "give either --addresses FILE or --no-external, not both")
    if request.addresses_file:
        listed = read_addresses(Path(request.addresses_file), domain)
    elif request.addresses_text.strip():
        listed = parse_addresses(request.addresses_text, "addresses", domain)
    else:
        return []
    if listed.errors:
        raise BadInput("addresses", "; ".join(listed.errors))
    if not listed.addresses:
        raise BadInput("addresses", f"no external address of {domain} is listed")
    return listed.addresses


def tsig_key_for(settings: Settings, domain: str) -> str:
    """The name of the key that signs updates of `domain`'s zone; a ConfigError if it is missing."""
    path = settings.dns.tsig_keyfile
    if not path:
        raise ConfigError("dns.tsig_keyfile", "is not set; RFC 2136 updates need a TSIG key (or use --dns centre)")
    if not Path(path).is_file():
        raise ConfigError("dns.tsig_keyfile", f"{path} does not exist")
    keys = read_tsig_keyfile(Path(path))
    zone = settings.dns.zone_for(domain)
    name = zone.tsig_key.rstrip(".").lower() if zone and zone.tsig_key else ""
    field = f'dns.zones."{zone.name}".tsig_key' if zone and zone.tsig_key else "dns.tsig_keyfile"
    if not name:
        if len(keys) != 1:
            raise ConfigError(field, f'{path} holds {len(keys)} keys; name one in dns.zones."<zone>".tsig_key')
        return next(iter(keys))
    if name not in keys:
        raise ConfigError(field, f"key {name!r} is not in {path} (it holds: {', '.join(keys) or 'no key'})")
    return name


async def _dns_answers(server: HostPort, name: str, timeout: float) -> None:
    await dns.asyncquery.tcp(dns.message.make_query(name, "SOA"), server.host, port=server.port, timeout=timeout)


async def check_reachable(settings: Settings, portal_mode: str, domain: str = "", dns_mode: str = "") -> None:
    """Every configured server a move will talk to answers; a ConfigError names the first that does not.

    `domain` (a domain move's) adds its zone's authoritative and update servers."""
    checks: list[tuple[str, str, Awaitable[None]]] = []  # the key, its server, the question
    timeout = settings.dns.timeout
    zone = settings.dns.zone_for(domain) if domain else None
    if zone:
        prefix = f'dns.zones."{zone.name}"'
        for server in zone.authoritative:
            checks.append((f"{prefix}.authoritative", str(server), _dns_answers(server, zone.name, timeout)))
        if zone.update_server and dns_mode == "rfc2136":
            update = zone.update_server
            checks.append((f"{prefix}.update_server", str(update), _dns_answers(update, zone.name, timeout)))
    for server in settings.dns.resolvers:
        checks.append(("dns.resolvers", str(server), _dns_answers(server, domain or ".", timeout)))
    if portal_mode == "http":
        checks.append(("portal.url", settings.portal.url, _http_answers(settings.portal.url, timeout)))
    results = await asyncio.gather(*(c for _, _, c in checks), return_exceptions=True)
    for (key, server, _), result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            reason = (
                "timed out" if isinstance(result, dns.exception.Timeout) else (str(result) or type(result).__name__)
            )
            raise ConfigError(key, f"({server}) does not answer: {reason}")


async def _http_answers(url: str, timeout: float) -> None:
    async with httpx.AsyncClient(timeout=timeout) as client:
        await client.get(url)
