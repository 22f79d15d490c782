"""What the security tests share: a PKI of the tests' own and the TLS-terminating proxy in front
of the dev server that requires a client certificate (tests/support/tls_proxy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trustme

from tests.support.tls_proxy import VERSIONS, Pki, TlsProxy, leaf


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server, client, other = trustme.CA(), trustme.CA(), trustme.CA()
    (directory / "server-ca.pem").write_bytes(server.cert_pem.bytes())
    (directory / "other-ca.pem").write_bytes(other.cert_pem.bytes())
    long_ago = datetime.now(UTC) - timedelta(days=400)
    expired = client.issue_cert("mailmove-worker", not_before=long_ago, not_after=long_ago + timedelta(days=30))
    return Pki(
        directory / "server-ca.pem",
        *leaf(directory, "client", client.issue_cert("mailmove-worker")),
        directory / "other-ca.pem",
        *leaf(directory, "other", other.issue_cert("mailmove-worker")),
        *leaf(directory, "expired", expired),
        server,
        client,
    )


@pytest.fixture(scope="module")
async def proxies(dev_env, pki):
    upstream = dev_env.client.service_client.config.target_host
    started = {v: await TlsProxy(upstream, pki.server, pki.client, tls_max=m).start() for v, m in VERSIONS.items()}
    yield started
    for proxy in started.values():
        await proxy.stop()


@pytest.fixture
def proxy(proxies) -> TlsProxy:
    return proxies["TLSv1.3"]
