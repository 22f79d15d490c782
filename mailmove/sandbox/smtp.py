"""SMTP stand-ins on loopback (aiosmtpd, certificates from one trustme CA per world).

The gateway's MX hosts require STARTTLS (as the gateway does since 2019) and accept
`RCPT TO` exactly for the domains the centre has registered. The relays (`mailout`,
`mailout-intern`, `mailout-unsecure`) permit relaying to the sources a rule allows, and can
misbehave as real relays do: no STARTTLS, only old TLS, a certificate for another name,
greylisting, a refused sender.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import trustme
from aiosmtpd.controller import Controller

from mailmove.sandbox.bind import free_port


class GatewayHandler:
    def __init__(self, accepts: Callable[[str], bool]):
        self.accepts = accepts
        self.rcpts: list[tuple[float, int, str]] = []  # (monotonic time, session, address)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts.append((time.monotonic(), id(session), address))
        if not self.accepts(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: not registered at the gateway"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: queued"


@dataclass
class Seen:
    """One SMTP session as the relay saw it."""

    peer: str
    helo: str
    tls: bool
    mail_from: str
    rcpt: str


@dataclass
class RelayHandler:
    """Relays for the sources `permits(peer address, helo name)` allows (a TSL entry, say)."""

    permits: Callable[[str, str], bool] = lambda peer, helo: True
    greylist: int = 0  # answer this many RCPTs with 451 first
    refused_senders: tuple[str, ...] = ()
    delay: float = 0.0  # seconds before answering RCPT, as a slow or tarpitting relay
    seen: list[Seen] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address in self.refused_senders:
            return f"553 5.1.8 <{address}>: Sender address rejected: Domain not found"
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        peer = session.peer[0]
        self.seen.append(Seen(peer, session.host_name or "", session.ssl is not None, envelope.mail_from, address))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.greylist > 0:
            self.greylist -= 1
            return f"451 4.7.1 <{address}>: Recipient address rejected: Greylisted, try again later"
        if not self.permits(peer, session.host_name or ""):
            return f"554 5.7.1 <{address}>: Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content or envelope.content)
        return f"250 2.0.0 Ok: queued as Q{next(self._ids):06d}"


def server_context(
    ca: trustme.CA, names: list[str], tls_max: ssl.TLSVersion | None = None, not_after: datetime | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if tls_max is not None:
        # an old device's relay; Debian's OpenSSL may refuse such a session outright
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated is the point here
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = tls_max
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    ca.issue_cert(*names, not_after=not_after).configure_cert(context)
    return context


class SmtpServer:
    """One aiosmtpd server on a free loopback port (of 127.0.0.1 unless `host` names another
    loopback address); STARTTLS with a certificate for `names` unless `starttls` is off."""

    def __init__(
        self,
        handler,
        ca: trustme.CA,
        names: list[str],
        *,
        starttls: bool = True,
        require_starttls: bool = True,
        tls_max: ssl.TLSVersion | None = None,
        not_after: datetime | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ):
        self.host = host
        self.port = port or free_port()
        self.handler = handler
        self.controller = Controller(
            handler,
            hostname=host,
            port=self.port,
            server_hostname=names[0],
            tls_context=server_context(ca, names, tls_max, not_after) if starttls else None,
            require_starttls=starttls and require_starttls,
            ready_timeout=10,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
