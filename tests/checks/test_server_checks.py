"""The server checks: forward-confirmed reverse DNS against a real BIND (forward and reverse
zones), STARTTLS against aiosmtpd stand-ins with trustme certificates (good, no STARTTLS,
wrong name, expiring in 5 days), and the relay test's verdict carried into the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from activities.dns import DnsActivities
from mailmove.base.config import parse_settings
from mailmove.base.model import RelayTranscript
from mailmove.base.report import Report, ServerCheckQuery
from mailmove.checks.server import ServerChecks
from mailmove.sandbox.bind import DnsWorld, Zone
from mailmove.sandbox.smtp import RelayHandler, SmtpServer
from tests.support.reports import SCHEMA, check

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # the server's zones are served by a real BIND

DOMAIN = "srv.check.test"
HOST = f"mail.{DOMAIN}"


@pytest.fixture(scope="module")
def dns_world(tmp_path_factory):
    forward = Zone(
        DOMAIN,
        ["@ NS ns1", "ns1 A 127.0.0.1", "mail A 127.0.0.1", "mx3 A 127.0.0.3", "www A 127.0.0.3", "ghost A 127.0.0.5"],
    )
    reverse = Zone(
        "127.in-addr.arpa",
        ["@ NS localhost.", f"1.0.0 PTR {HOST}.", f"3.0.0 PTR www.{DOMAIN}.", f"4.0.0 PTR ghost.{DOMAIN}."],
    )
    with DnsWorld([forward, reverse], root=tmp_path_factory.mktemp("dns")) as world:
        yield world


async def run(dns_world, ca, port: int = 9, fqdn: str = HOST, addresses=("127.0.0.1",), relay=None) -> Report:
    config = parse_settings(
        {
            "dns": {"resolvers": [dns_world.resolver.address], "timeout": 2},
            "smtp": {"ca_file": str(ca[1]), "helo": "probe.check.test"},
            "check": {"smtp_port": port, "timeout": 5},
        }
    )
    report = await ServerChecks(config, DnsActivities(config)).run(ServerCheckQuery(fqdn, list(addresses), relay))
    jsonschema.validate(json.loads(json.dumps(report.to_json())), SCHEMA)
    return report


def serving(ca, names, **options) -> SmtpServer:
    return SmtpServer(RelayHandler(), ca[0], names, **options).start()


async def test_a_good_server(dns_world, ca):
    server = serving(ca, [HOST])
    try:
        report = await run(dns_world, ca, server.port)
    finally:
        server.stop()
    assert check(report, "dns.fcrdns[127.0.0.1]").verdict == "ok"
    assert check(report, "smtp.banner[127.0.0.1]").verdict == "ok"
    tls = check(report, "smtp.starttls[127.0.0.1]")
    assert tls.verdict == "ok" and tls.summary.startswith("STARTTLS with TLSv1.")
    assert any("SHA-256" in o for o in tls.observed)
    assert check(report, "relay.test").verdict == "not_tested"
    assert not report.errors and not report.with_verdict("warning")


async def test_no_starttls_is_an_error(dns_world, ca):
    server = serving(ca, [HOST], starttls=False)
    try:
        tls = check(await run(dns_world, ca, server.port), "smtp.starttls[127.0.0.1]")
    finally:
        server.stop()
    assert tls.verdict == "error" and "does not offer STARTTLS" in tls.summary
    assert tls.fix.startswith("enable STARTTLS with TLS 1.2 or newer")


async def test_a_certificate_for_another_name_is_an_error(dns_world, ca):
    server = serving(ca, [f"other.{DOMAIN}"])
    try:
        report = await run(dns_world, ca, server.port)
    finally:
        server.stop()
    tls = check(report, "smtp.starttls[127.0.0.1]")
    assert tls.verdict == "error" and f"not valid for {HOST}" in tls.summary
    assert tls.fix.startswith(f"install a certificate for {HOST}")
    banner = check(report, "smtp.banner[127.0.0.1]")
    assert banner.verdict == "warning" and f"myhostname = {HOST}" in banner.fix


async def test_a_certificate_expiring_in_5_days_is_a_warning(dns_world, ca):
    server = serving(ca, [HOST], not_after=datetime.now(UTC) + timedelta(days=5, hours=1))
    try:
        tls = check(await run(dns_world, ca, server.port), "smtp.starttls[127.0.0.1]")
    finally:
        server.stop()
    assert tls.verdict == "warning" and tls.summary == "the certificate expires in 5 days"
    assert tls.fix == f"renew the certificate of {HOST} now (and reload the MTA)"


async def test_nothing_listening_is_not_tested(dns_world, ca):
    report = await run(dns_world, ca)  # port 9: discard, not served here
    for id in ("smtp.banner[127.0.0.1]", "smtp.starttls[127.0.0.1]"):
        assert check(report, id).verdict == "not_tested" and "firewall" in check(report, id).reason
    assert not report.errors


async def test_a_ptr_naming_another_host(dns_world, ca):
    fcrdns = check(await run(dns_world, ca, fqdn=f"mx3.{DOMAIN}", addresses=["127.0.0.3"]), "dns.fcrdns[127.0.0.3]")
    assert fcrdns.verdict == "error" and fcrdns.observed[0] == f"3.0.0.127.in-addr.arpa. PTR www.{DOMAIN}"
    assert (
        fcrdns.fix
        == f"set `3.0.0.127.in-addr.arpa. IN PTR mx3.{DOMAIN}.` in the central DNS (forward and reverse must match)"
    )


async def test_a_name_that_does_not_resolve_back(dns_world, ca):
    fcrdns = check(await run(dns_world, ca, fqdn=f"ghost.{DOMAIN}", addresses=["127.0.0.4"]), "dns.fcrdns[127.0.0.4]")
    assert fcrdns.verdict == "error" and fcrdns.fix == f"set `ghost.{DOMAIN}. IN A 127.0.0.4` in the central DNS"


async def test_addresses_default_to_what_the_name_resolves_to(dns_world, ca):
    report = await run(dns_world, ca, fqdn=f"mx3.{DOMAIN}", addresses=())
    assert [c.id for c in report.checks if c.group == "DNS"] == ["dns.fcrdns[127.0.0.3]"]


@pytest.mark.parametrize(
    ("verdict", "expected"), [("passed", "ok"), ("relay_denied", "warning"), ("certificate", "error")]
)
async def test_the_host_agents_relay_test_is_carried_in(dns_world, ca, verdict, expected):
    transcript = RelayTranscript("mailout.check.test:25", "127.0.0.1", verdict, f"the relay said {verdict}", [])
    relay = check(await run(dns_world, ca, relay=transcript), "relay.test")
    assert relay.verdict == expected
    if expected != "ok":
        assert relay.observed == [f"the relay said {verdict}"] and relay.fix
