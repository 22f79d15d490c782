"""The TLS client context: built once per CA file (loading a trust store per connection was
the largest cost of a move's activities), and still verifying every certificate."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from mailmove.base.tls import tls_context
from mailmove.sandbox.smtp import server_context


async def handshake(context: ssl.SSLContext, ca: trustme.CA, certified: str, expected: str) -> None:
    """A TLS handshake, expecting `expected`, with a loopback server whose certificate `ca`
    issued for `certified`."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_context(ca, [certified]))
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=expected)
        writer.close()
    finally:
        server.close()


async def test_one_context_per_ca_file_that_verifies_every_certificate(tmp_path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    context = tls_context(str(ca_file))
    assert tls_context(str(ca_file)) is context  # the trust store is loaded once
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2

    await handshake(context, ca, "mx.sandbox.test", "mx.sandbox.test")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await handshake(context, ca, "other.sandbox.test", "mx.sandbox.test")
    # the system's CAs alone do not know the private CA
    assert tls_context() is not context
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(tls_context(), ca, "mx.sandbox.test", "mx.sandbox.test")
