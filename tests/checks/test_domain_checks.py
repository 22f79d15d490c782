"""The domain checks against zones a real BIND serves: one zone per failure, each giving its
verdict and fix; one fully correct domain giving no warning. The report's JSON is validated
against the schema kept in the repository."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import socket
import ssl
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.query
import dns.tsigkeyring
import dns.update
import jsonschema
import pytest

from activities.dns import DnsActivities
from mailmove.base.config import Settings, parse_settings
from mailmove.base.model import MxRecord
from mailmove.base.report import DomainCheckQuery, Report
from mailmove.checks.domain import DomainChecks
from mailmove.sandbox.bind import DnsWorld, Zone, free_port
from mailmove.sandbox.mta_sts import MtaStsServer, policy_text
from mailmove.sandbox.world import GATEWAY_MX, GATEWAY_SPF, gateway_zone
from tests.support.dns import serial_of
from tests.support.reports import SCHEMA, check

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # the zones are served by a real BIND

PARENT = "check.test"
INCLUDE = "_spf.gw.sandbox.test"
NETWORKS = GATEWAY_SPF
GATEWAY = [f"MX 10 {h}." for h in GATEWAY_MX]
MAX_AGE = 604800


def zone(name: str, mx: list[str], *records: str) -> Zone:
    return Zone(
        f"{name}.{PARENT}",
        ["@ NS ns1", "ns1 A 127.0.0.1", "mail A 127.0.0.1", "mx2 A 127.0.0.2", *(f"@ {m}" for m in mx), *records],
        ttl=300,
    )


SPF_OK = f'@ TXT "v=spf1 mx include:{INCLUDE} -all"'
DMARC_OK = '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:dmarc@good.check.test"'
ZONES = [
    zone("good", GATEWAY, SPF_OK, DMARC_OK),
    zone("networks", GATEWAY, f'@ TXT "v=spf1 {NETWORKS} -all"', DMARC_OK),
    zone("before", ["MX 10 mail"], SPF_OK, DMARC_OK),
    zone("during", [*GATEWAY, "MX 5 mail"], SPF_OK, DMARC_OK),
    zone("upside", [*GATEWAY, "MX 20 mail"], SPF_OK, DMARC_OK),
    zone("spf-nogw", GATEWAY, '@ TXT "v=spf1 mx -all"', DMARC_OK),
    zone("spf-part", GATEWAY, '@ TXT "v=spf1 ip4:130.83.156.224/27 -all"', DMARC_OK),
    zone(
        "spf-many",
        GATEWAY,
        '@ TXT "v=spf1 ' + " ".join(["a:mail.spf-many.check.test"] * 5 + ["mx"] * 5) + f' include:{INCLUDE} -all"',
        DMARC_OK,
    ),
    zone("spf-void", GATEWAY, f'@ TXT "v=spf1 a:x1 a:x2 a:x3 include:{INCLUDE} -all"', DMARC_OK),
    zone("spf-two", GATEWAY, SPF_OK, '@ TXT "v=spf1 mx -all"', DMARC_OK),
    zone("no-dmarc", GATEWAY, SPF_OK),
    zone("bad-dmarc", GATEWAY, SPF_OK, '_dmarc TXT "v=DMARC1; p=sometimes"'),
    zone("null-mx", ["MX 0 ."], SPF_OK, DMARC_OK),
    zone("nohost", ["MX 10 ghost"], SPF_OK, DMARC_OK),
    zone("alias", [*GATEWAY, "MX 5 mx"], SPF_OK, DMARC_OK, "mx CNAME mail"),
    zone(
        "sts", [*GATEWAY, "MX 5 mail"], SPF_OK, DMARC_OK, '_mta-sts TXT "v=STSv1; id=20261128"', "mta-sts A 127.0.0.1"
    ),
    zone("sts-ok", GATEWAY, SPF_OK, DMARC_OK, '_mta-sts TXT "v=STSv1; id=20261128"', "mta-sts A 127.0.0.1"),
    *(
        zone(name, GATEWAY, SPF_OK, DMARC_OK, '_mta-sts TXT "v=STSv1; id=20261128"', "mta-sts A 127.0.0.1")
        for name in ("sts-huge", "sts-slow", "sts-bomb")
    ),
    zone("dane", [*GATEWAY, "MX 5 mail"], SPF_OK, DMARC_OK, "_25._tcp.mail TLSA 3 1 1 " + "ab" * 32),
    zone("stale", GATEWAY, SPF_OK, DMARC_OK),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, ca):
    ca, ca_file = ca
    policies = {
        f"sts.{PARENT}": policy_text("enforce", MAX_AGE, [f"mail.sts.{PARENT}"]),
        f"sts-ok.{PARENT}": policy_text("enforce", MAX_AGE, ["*.mx.gw.sandbox.test"]),
        f"sts-huge.{PARENT}": "version: STSv1\r\n" + "mx: " + "x" * (3 << 20) + "\r\n",  # 3 MB
    }
    sts = MtaStsServer(ca, policies).start()
    # NOTIFY off: a change on the primary leaves the secondary stale, as a broken transfer would
    with DnsWorld([*ZONES, gateway_zone()], root=tmp_path_factory.mktemp("dns"), notify="off") as dns_world:
        yield dns_world, sts, ca_file
    sts.stop()


def settings(dns_world: DnsWorld, sts: MtaStsServer, ca_file: Path, resolver: str = "", timeout: float = 2) -> Settings:
    servers = [dns_world.primary.address, dns_world.secondary.address]
    return parse_settings(
        {
            "gateway": {"mx": GATEWAY_MX, "spf_include": INCLUDE},
            "dns": {
                "resolvers": [resolver or dns_world.resolver.address],
                "timeout": timeout,
                "zones": {z.name: {"authoritative": servers} for z in ZONES},
            },
            "smtp": {"ca_file": str(ca_file)},
            "check": {"mta_sts_port": sts.port, "timeout": 5},
        }
    )


async def run(world, name: str, stage: str = "", **query) -> Report:
    config = settings(*world)
    report = await DomainChecks(config, DnsActivities(config)).run(DomainCheckQuery(f"{name}.{PARENT}", stage, **query))
    jsonschema.validate(json.loads(json.dumps(report.to_json())), SCHEMA)
    return report


async def test_a_correct_domain_gives_no_warning(world):
    report = await run(world, "good")
    assert report.stage == "after" and report.notes == ["stage after inferred from the MX set served now"]
    assert {c.verdict for c in report.checks} == {"ok"}, [(c.id, c.verdict, c.summary) for c in report.checks]
    assert {c.id for c in report.checks} == {
        "dns.zone", "mx.plan", "mx.null", "mx.targets", "dane.tlsa", "mta_sts.policy",
        "spf.record", "spf.lookups", "spf.gateway", "dmarc.record",
    }  # fmt: skip
    assert "include:_spf.gw.sandbox.test" in check(report, "spf.gateway").summary


async def test_the_four_gateway_networks_cover_the_gateway_too(world):
    gateway = check(await run(world, "networks", "after"), "spf.gateway")
    assert gateway.verdict == "ok" and "the gateway networks" in gateway.summary


@pytest.mark.parametrize(
    ("name", "right"),
    [("before", "before"), ("during", "during"), ("good", "after"), ("upside", None), ("null-mx", "before")],
)
@pytest.mark.parametrize("stage", ["before", "during", "after"])
async def test_the_mx_set_must_match_the_plan_of_each_stage(world, name, right, stage):
    plan = check(await run(world, name, stage, legacy_mx=f"mail.{name}.{PARENT}"), "mx.plan")
    assert plan.verdict == ("ok" if stage == right else "error"), plan
    if plan.verdict == "error":
        assert plan.fix and plan.expected and plan.observed
    if stage == "during" and plan.verdict == "error":
        assert "lower value" in plan.fix


async def test_before_against_the_set_a_move_recorded(world):
    recorded = [MxRecord(10, f"mx2.before.{PARENT}")]
    plan = check(await run(world, "before", "before", old_mx=recorded), "mx.plan")
    assert plan.verdict == "error" and plan.expected == [f"10 mx2.before.{PARENT}."]
    assert "changed since the move recorded it" in plan.fix


@pytest.mark.parametrize(("stage", "verdict"), [("before", "warning"), ("after", "error")])
async def test_spf_that_misses_the_gateway(world, stage, verdict):
    for name, missing in (("spf-nogw", "130.83.156.224/27"), ("spf-part", "130.83.252.128/26")):
        gateway = check(await run(world, name, stage), "spf.gateway")
        assert gateway.verdict == verdict
        assert gateway.fix == f"add `include:{INCLUDE}` to the SPF record of {name}.{PARENT}, before the `all` term"
        assert any(missing in o for o in gateway.observed)


async def test_spf_over_the_lookup_limit(world):
    report = await run(world, "spf-many")
    lookups = check(report, "spf.lookups")
    assert lookups.verdict == "error" and "11/10" in lookups.observed[0]
    assert lookups.fix.startswith("flatten includes")
    assert check(report, "spf.gateway").verdict == "not_tested"


async def test_spf_over_the_void_lookup_limit(world):
    lookups = check(await run(world, "spf-void"), "spf.lookups")
    assert lookups.verdict == "error" and "void" in lookups.observed[0]


async def test_two_spf_records(world):
    record = check(await run(world, "spf-two"), "spf.record")
    assert record.verdict == "error" and record.summary == "more than one SPF record"
    assert len(record.observed) == 2 and record.fix.startswith("merge the SPF records into one")


async def test_dmarc_missing_is_a_notice_and_a_bad_one_an_error(world):
    missing = check(await run(world, "no-dmarc"), "dmarc.record")
    assert missing.verdict == "notice" and missing.fix.startswith(f"publish `_dmarc.no-dmarc.{PARENT}.")
    bad = check(await run(world, "bad-dmarc"), "dmarc.record")
    assert bad.verdict == "error" and "sometimes" in bad.fix


async def test_null_mx_is_recognised(world):
    report = await run(world, "null-mx", "before")
    null = check(report, "mx.null")
    assert null.verdict == "notice" and "RFC 7505" in null.summary and null.observed == ["0 ."]
    assert null.fix == "remove the `0 .` MX record; the gateway hosts receive the domain's mail"
    assert check(report, "mx.targets").verdict == "ok"  # nothing to resolve
    assert check(await run(world, "null-mx", "after"), "mx.null").verdict == "error"


async def test_an_mx_target_without_an_address(world):
    targets = check(await run(world, "nohost", "before"), "mx.targets")
    assert targets.verdict == "error" and targets.fix.startswith(f"add an A/AAAA record for ghost.nohost.{PARENT}")


async def test_an_mx_target_that_is_an_alias(world):
    targets = check(await run(world, "alias", "during"), "mx.targets")
    assert targets.verdict == "warning" and targets.summary == f"MX target mx.alias.{PARENT} is an alias (CNAME)"
    assert f"mx.alias.{PARENT}: 127.0.0.1" in targets.observed
    assert targets.fix == f"point the MX record at the canonical name instead of mx.alias.{PARENT}"


async def test_an_mta_sts_policy_naming_the_old_host_is_a_hazard(world):
    during = check(await run(world, "sts", "during"), "mta_sts.policy")
    assert during.verdict == "warning" and "hazard" in during.summary and "7.0 days" in during.summary
    assert f"mx: mail.sts.{PARENT}" in during.observed and f"max_age {MAX_AGE}" in " ".join(during.observed)
    assert f"at least max_age ({MAX_AGE} s) before the MX change" in during.fix
    # enforced after the move, the gateway hosts it does not name would be refused mail
    assert check(await run(world, "sts", "after"), "mta_sts.policy").verdict == "error"
    assert check(await run(world, "sts-ok", "after"), "mta_sts.policy").verdict == "ok"


async def test_a_hostile_policy_host_is_cut_off_by_size_and_by_time(world, ca):
    """At most 64 KiB, within check.timeout in all: a 3 MB policy and one sent a byte a second
    are each a warning naming the limit, read in bounded memory and time, echoing nothing."""
    started = time.monotonic()
    huge = check(await run(world, "sts-huge", "during"), "mta_sts.policy")
    assert huge.verdict == "warning" and f"more than {64 * 1024} bytes" in " ".join(huge.observed)
    assert max(len(line) for line in huge.observed) < 300 and time.monotonic() - started < 5

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(60):
            writer.write(b"v")
            await writer.drain()
            await asyncio.sleep(1)

    started = time.monotonic()
    slow = check(await run_against(world, ca, "sts-slow", drip), "mta_sts.policy")
    assert slow.verdict == "warning" and "within 3 s" in " ".join(slow.observed)
    assert time.monotonic() - started < 10


async def test_a_compressed_policy_is_refused_never_inflated(world, ca):
    """httpx inflates whatever encoding a host declares, a chunk at a time and without a bound,
    before the 64 KiB count sees it: a gzip of a gzip of 50 MiB of zeros (a few hundred bytes
    sent) is asked not to come (identity), and refused unread when it comes all the same."""
    bomb = gzip.compress(gzip.compress(bytes(50 << 20)))
    asked: list[bytes] = []

    async def bombing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        writer.write(head.encode() + bomb)
        await writer.drain()

    tracemalloc.start()
    try:
        started = time.monotonic()
        report = await run_against(world, ca, "sts-bomb", bombing)
        took = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak >> 10} KiB allocated at the peak for a {len(bomb)}-byte reply"
    assert took < 5, took
    bombed = check(report, "mta_sts.policy")
    assert bombed.verdict == "warning" and "Content-Encoding 'gzip, gzip'" in " ".join(bombed.observed), bombed
    assert b"\r\naccept-encoding: identity\r\n" in asked[0].lower(), asked


async def run_against(
    world, ca, name: str, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
) -> Report:
    """The checks of `name` during a move, its policy host `serve` (HTTPS on a free port), within 3 s."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert(f"mta-sts.{name}.{PARENT}").configure_cert(tls)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    dns_world, sts, ca_file = world
    config = settings(dns_world, sts, ca_file)
    config = dataclasses.replace(
        config, check=dataclasses.replace(config.check, mta_sts_port=server.sockets[0].getsockname()[1], timeout=3)
    )
    async with server:
        return await DomainChecks(config, DnsActivities(config)).run(DomainCheckQuery(f"{name}.{PARENT}", "during"))


async def test_dane_records_of_the_old_server_are_a_hazard(world):
    dane = check(await run(world, "dane", "during", legacy_mx=f"mail.dane.{PARENT}"), "dane.tlsa")
    assert dane.verdict == "warning" and f"mail.dane.{PARENT}" in dane.summary
    assert dane.fix.endswith(f"delete `_25._tcp.mail.dane.{PARENT}` TLSA when it is switched off")


async def test_a_secondary_with_an_older_serial(world):
    dns_world = world[0]
    name = f"stale.{PARENT}"
    update = dns.update.UpdateMessage(name, keyring=_keyring(dns_world), keyname=dns_world.key_name)
    update.add(f"note.{name}.", 300, "TXT", '"changed on the primary only"')
    dns.query.tcp(update, "127.0.0.1", port=dns_world.primary.port, timeout=3)
    assert serial_of(dns_world.primary.port, name) == 2 and serial_of(dns_world.secondary.port, name) == 1
    zone_check = check(await run(world, "stale"), "dns.zone")
    assert zone_check.verdict == "warning" and dns_world.secondary.address in zone_check.summary
    assert (
        zone_check.fix == f"check NOTIFY and zone transfers from the primary of {name} to {dns_world.secondary.address}"
    )


async def test_a_dns_timeout_is_not_tested_never_failed(world):
    dns_world, sts, ca_file = world
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", free_port()))
    try:
        config = settings(dns_world, sts, ca_file, resolver=f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        report = await DomainChecks(config, DnsActivities(config)).run(DomainCheckQuery(f"good.{PARENT}", "after"))
    finally:
        silent.close()
    assert not report.errors
    for id in ("spf.record", "dmarc.record", "mx.targets"):
        assert check(report, id).verdict == "not_tested" and "timed out" in check(report, id).reason


def _keyring(dns_world: DnsWorld):
    text = dns_world.keyfile.read_text()
    secret = text.split('secret "')[1].split('"')[0]
    algorithm = text.split("algorithm ")[1].split(";")[0].strip()
    return dns.tsigkeyring.from_text({dns_world.key_name: (algorithm, secret)})
