"""Everything a start request must pass before a workflow exists: names, the gateway's rules,
the TSIG key, and that every configured server the move needs answers.

Shared by the CLI and the dashboard; each failure names the field to fix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import httpx

from mailmove.config import HostPort, Settings, read_tsig_keyfile
from mailmove.names import BadName, to_alabel, to_ulabel
from workflows.model import DomainMoveInput

DNS_MODES = ("rfc2136", "centre")
PORTAL_MODES = ("manual", "http")


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class DomainMoveRequest:
    domain: str
    legacy_mx: str
    dns_mode: str = "rfc2136"
    portal_mode: str = ""  # empty: the configured mode
    legacy_preference: int | None = None  # None: the gateway profile's
    actor: str = ""


def _name(field: str, text: str) -> str:
    try:
        return to_alabel(text)
    except BadName as exc:
        raise FieldError(field, str(exc)) from None


def domain_move_input(settings: Settings, request: DomainMoveRequest) -> DomainMoveInput:
    """The workflow input, or a FieldError; no I/O (see `check_reachable` for that)."""
    gateway = settings.gateway
    domain = _name("domain", request.domain)
    legacy = _name("legacy_mx", request.legacy_mx)
    if legacy in gateway.mx:
        raise FieldError("legacy_mx", f"{legacy} is one of the gateway hosts; name the department's old mail server")
    preference = gateway.legacy_preference if request.legacy_preference is None else request.legacy_preference
    if not 0 <= preference < gateway.mx_preference:
        raise FieldError(
            "legacy_preference",
            f"{preference} must be below the gateway's preference {gateway.mx_preference}, "
            "so that mail keeps reaching the old server until the domain is registered",
        )
    if request.dns_mode not in DNS_MODES:
        raise FieldError("dns", f"{request.dns_mode!r} is not one of {', '.join(DNS_MODES)}")
    portal_mode = request.portal_mode or settings.portal.mode
    if portal_mode not in PORTAL_MODES:
        raise FieldError("portal", f"{portal_mode!r} is not one of {', '.join(PORTAL_MODES)}")
    if request.dns_mode == "rfc2136":
        tsig_key_for(settings, domain)
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
    )


def tsig_key_for(settings: Settings, domain: str) -> str:
    """The name of the key that signs updates of `domain`'s zone; FieldError if it is missing."""
    path = settings.dns.tsig_keyfile
    if not path:
        raise FieldError("dns.tsig_keyfile", "is not set; RFC 2136 updates need a TSIG key (or use --dns centre)")
    if not Path(path).is_file():
        raise FieldError("dns.tsig_keyfile", f"{path} does not exist")
    keys = read_tsig_keyfile(Path(path))
    zone = settings.dns.zone_for(domain)
    name = zone.tsig_key.rstrip(".").lower() if zone and zone.tsig_key else ""
    field = f'dns.zones."{zone.name}".tsig_key' if zone and zone.tsig_key else "dns.tsig_keyfile"
    if not name:
        if len(keys) != 1:
            raise FieldError(field, f'{path} holds {len(keys)} keys; name one in dns.zones."<zone>".tsig_key')
        return next(iter(keys))
    if name not in keys:
        raise FieldError(field, f"key {name!r} is not in {path} (it holds: {', '.join(keys) or 'no key'})")
    return name


async def _dns_answers(server: HostPort, name: str, timeout: float) -> None:
    await dns.asyncquery.tcp(dns.message.make_query(name, "SOA"), server.host, port=server.port, timeout=timeout)


async def check_reachable(settings: Settings, move: DomainMoveInput) -> None:
    """Every configured server this move will talk to answers; FieldError names the first that does not."""
    checks: list[tuple[str, asyncio.Future]] = []
    timeout = settings.dns.timeout
    zone = settings.dns.zone_for(move.domain)
    if zone:
        prefix = f'dns.zones."{zone.name}"'
        for server in zone.authoritative:
            checks.append((f"{prefix}.authoritative ({server})", _dns_answers(server, zone.name, timeout)))
        if zone.update_server and move.dns_mode == "rfc2136":
            checks.append(
                (f"{prefix}.update_server ({zone.update_server})", _dns_answers(zone.update_server, zone.name, timeout))
            )
    for server in settings.dns.resolvers:
        checks.append((f"dns.resolvers ({server})", _dns_answers(server, move.domain, timeout)))
    if move.portal_mode == "http":
        checks.append((f"portal.url ({settings.portal.url})", _http_answers(settings.portal.url, timeout)))
    results = await asyncio.gather(*(c for _, c in checks), return_exceptions=True)
    for (field, _), result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            reason = (
                "timed out" if isinstance(result, dns.exception.Timeout) else (str(result) or type(result).__name__)
            )
            raise FieldError(field.split(" ")[0], f"{field.split(' ', 1)[1]} does not answer: {reason}")


async def _http_answers(url: str, timeout: float) -> None:
    async with httpx.AsyncClient(timeout=timeout) as client:
        await client.get(url)
