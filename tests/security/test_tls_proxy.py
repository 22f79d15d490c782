"""The tests' own TLS proxy (tests/support/tls_proxy.py) against a client that cuts the connection
once TLS is up. The event loop lives for the whole session, so a half of a piped connection left
waiting after its sockets were closed kept a stale fd in the loop's selector: the next socket
given that number failed its first wait with FileNotFoundError, and a CI run failed
test_cli_bootstrap_over_mtls that way, at random, several tests later."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

from tests.support.polling import wait_for
from tests.support.tls_proxy import TlsProxy


def halves() -> list[asyncio.Task]:
    """The proxy's pipe tasks still alive on this loop."""
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith("_Tls.")]


async def test_a_client_that_resets_leaves_no_half_waiting(pki):
    with socket.socket() as silent:  # an upstream that takes the connection and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        host, port = silent.getsockname()
        async with TlsProxy(f"{host}:{port}", pki.server, pki.client) as proxy:
            context = ssl.create_default_context(cafile=pki.server_ca)
            context.load_cert_chain(pki.cert, pki.key)
            _, writer = await asyncio.open_connection(
                *proxy.address.split(":"), ssl=context, server_hostname="localhost"
            )
            writer.write(b"PRI * HTTP/2.0\r\n\r\n")
            await writer.drain()
            await wait_for(lambda: proxy.seen and proxy.seen[-1], 10, 0.05, "the first bytes piped")
            assert halves(), "the connection is piped: both halves run"
            # a reset, not a FIN: the proxy's client half fails while the upstream half waits
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            await wait_for(lambda: proxy.dropped, 10, 0.05, "the cut to be seen")
            assert "ConnectionResetError" in proxy.dropped[0], proxy.dropped
            assert halves() == [], "a half of the cut connection still waits on a closed socket"
