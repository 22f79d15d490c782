"""A stand-in for the gateway's MX hosts: aiosmtpd that requires STARTTLS (as the gateway
does since 2019) and accepts `RCPT TO` exactly for the domains the centre has registered."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller

from sandbox.bind import free_port


class GatewayHandler:
    def __init__(self, accepts: Callable[[str], bool]):
        self.accepts = accepts

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.accepts(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: not registered at the gateway"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: queued"


class GatewaySmtp:
    """One aiosmtpd server with a certificate, from a trustme CA, for every gateway name."""

    def __init__(self, names: list[str], accepts: Callable[[str], bool], ca_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.ca = trustme.CA()
        ca_dir.mkdir(parents=True, exist_ok=True)
        self.ca_file = ca_dir / "gateway-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        self.handler = GatewayHandler(accepts)
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname=names[0],
            tls_context=context,
            require_starttls=True,
            ready_timeout=10,
        )

    def start(self) -> GatewaySmtp:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
