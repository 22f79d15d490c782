"""`mailmove survey` against a campus of more than 200 zones a real BIND serves: every domain in
its class, the broken ones with the reason (a lame server, a zone that fails to load, a server
that never answers, a name that does not exist); the zone read by AXFR with its TSIG key and
refused without it; the not-yet domains written as a wave file that `prepare_wave` takes as it
is; the per-server rate limit."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest

from mailmove.base.errors import BadInput, ConfigError
from mailmove.base.vocabulary import SurveyClass
from mailmove.checks.survey import Limits
from mailmove.sandbox.mta_sts import MtaStsServer, policy_text
from mailmove.service.survey import last_survey_counts, read_domains, run_survey, write_wave, zone_domains
from mailmove.service.waves import prepare_wave
from tests.support.survey_world import (
    CAMPUS,
    PARENT,
    CampusWorld,
    campus,
    record_moves,
    silent_server,
    survey_settings,
)

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # the zones are served by a real BIND

CAMPUS_ZONES = campus(scale=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory, ca):
    ca, ca_file = ca
    sts = MtaStsServer(ca, {f"sts.{PARENT}": policy_text("enforce", 86400, [f"mail.sts.{PARENT}"])}).start()
    silent = silent_server()
    root = tmp_path_factory.mktemp("campus")
    with CampusWorld(CAMPUS_ZONES.zones, root=root / "dns") as dns_world:
        yield dns_world, silent, root, sts, ca_file
    silent.close()
    sts.stop()


def settings_of(world, name: str = "mailmove.db", **options):
    dns_world, silent, root, sts, ca_file = world
    return survey_settings(
        dns_world,
        silent,
        f"sqlite:///{root / name}",
        smtp={"ca_file": str(ca_file)},
        check={"mta_sts_port": sts.port, "timeout": 5},
        **options,
    )


@pytest.fixture(scope="module")
def surveyed(world):
    """The whole campus surveyed once, with a finished move and a running one in the store."""
    settings = settings_of(world)
    record_moves(settings.database.url)
    seen = []
    result = asyncio.run(run_survey(settings, "file campus", list(CAMPUS_ZONES.expected), 50, seen.append))
    return settings, result, seen


def test_every_domain_of_the_campus_is_in_its_class(surveyed):
    settings, result, seen = surveyed
    assert len(result.domains) == len(CAMPUS_ZONES.expected) >= 200 and len(seen) == len(result.domains)
    found = {d.domain: d.survey_class for d in result.domains}
    wrong = {d: (found[d], want) for d, want in CAMPUS_ZONES.expected.items() if found[d] != want}
    assert not wrong, [(d, next(x.reason for x in result.domains if x.domain == d)) for d in wrong]
    counts = result.counts()
    assert counts == {c.value: sum(v == c for v in CAMPUS_ZONES.expected.values()) for c in SurveyClass}
    assert last_survey_counts(settings) == {SurveyClass(c): n for c, n in counts.items()}
    assert result.queries > 10 * len(result.domains)


def by_name(result, name: str):
    return next(d for d in result.domains if d.domain == f"{name}.{PARENT}")


def test_the_broken_ones_say_why(surveyed):
    _, result, _ = surveyed
    assert "lame server" in by_name(result, "lame").reason
    assert "SERVFAIL" in by_name(result, "servfail").reason
    slow = by_name(result, "slow").reason
    assert "timeout" in slow and "no answer in 1 s" in slow
    assert "does not resolve" in by_name(result, "ghost").reason
    assert sorted(bool(s.problem) for s in by_name(result, "lame").servers) == [False, True]


def test_what_is_found_per_domain(surveyed):
    _, result, _ = surveyed
    behind = by_name(result, "b001")
    assert [str(r) for r in behind.mx] == ["10 a2681.mx.gw.sandbox.test.", "10 b2681.mx.gw.sandbox.test.",
                                            "10 c2681.mx.gw.sandbox.test."]  # fmt: skip
    assert behind.mx_ttl == 300 and [s.ttl for s in behind.servers] == [300, 300]
    assert (behind.spf, behind.spf_gateway, behind.dmarc, behind.dmarc_policy) == ("ok", True, "ok", "reject")
    own = by_name(result, "b000")  # behind, but its SPF misses the gateway and it has no DMARC
    assert (own.spf, own.spf_gateway, own.dmarc) == ("ok", False, "none")
    not_yet = by_name(result, "n000")
    assert not_yet.legacy_mx == f"mail.n000.{PARENT}" and not_yet.hazards == []
    assert by_name(result, "i000").implicit_mx and not by_name(result, "i000").legacy_mx
    assert "null MX" in by_name(result, "z000").reason
    assert "only 1 of the 3 gateway hosts" in by_name(result, "some").reason
    moved = by_name(result, "moved")
    assert moved.move.state == "done" and "left in the MX set from the move" in moved.reason
    assert by_name(result, "moving").move.state == "running"
    assert any("DANE" in h for h in by_name(result, "dane").hazards)
    assert any("MTA-STS" in h for h in by_name(result, "sts").hazards)
    hostile = by_name(result, "hostile")
    assert hostile.spf == "invalid" and "[b]x[/b]" in hostile.spf_record


async def test_the_wave_file_is_a_wave_as_it_is(surveyed, tmp_path):
    settings, result, _ = surveyed
    path = tmp_path / "campus.csv"
    rows = write_wave(path, result)
    wanted = sorted(
        d
        for d, c in CAMPUS_ZONES.expected.items()
        if c == SurveyClass.NOT_YET and not d.startswith("i") and d != f"moving.{PARENT}"
    )
    assert rows == len(wanted)
    assert path.read_text().splitlines()[:2] == ["domain,legacy_mx", f"n000.{PARENT},mail.n000.{PARENT}"]
    wave = await prepare_wave(settings, path, 10, "30/min")
    assert sorted(r.subject for r in wave.rows) == wanted
    assert {r.domain_move.legacy_mx for r in wave.rows} == {f"mail.{d}" for d in wanted}


async def test_a_zone_read_by_axfr_with_its_tsig_key(world):
    names = await zone_domains(settings_of(world), CAMPUS)
    assert sorted(names) == sorted(f"{n}{CAMPUS}" for n in ("", "ns1.", "mail.", "www.", "lists.", "spfonly."))


async def test_a_transfer_without_the_right_key_is_refused(world):
    with pytest.raises(ConfigError) as refused:
        await zone_domains(settings_of(world, campus_key="ddns-key"), CAMPUS)
    assert "refused the transfer of campus.test" in str(refused.value)
    settings = settings_of(world)
    no_keys = replace(settings, dns=replace(settings.dns, tsig_keyfile=""))
    with pytest.raises(ConfigError) as missing:
        await zone_domains(no_keys, CAMPUS)
    assert "no TSIG key" in str(missing.value)


def test_a_domain_file_bad_line_by_line(tmp_path):
    path = tmp_path / "domains.txt"
    path.write_text("# the campus\nchem.example.org  # chemistry\n\nCHEM.example.org\nphys..example.org\nbad name\n")
    with pytest.raises(BadInput) as bad:
        read_domains(path, 100)
    assert "2 bad line(s), nothing surveyed" in str(bad.value)
    assert "domains.txt:5: 'phys..example.org' has an empty label" in str(bad.value)
    assert "domains.txt:6: " in str(bad.value)
    path.write_text("# the campus\nchem.example.org  # chemistry\n\nCHEM.example.org\nbücher.example.org\n")
    assert read_domains(path, 100) == ["chem.example.org", "xn--bcher-kva.example.org"]
    with pytest.raises(BadInput, match="more than 1 domains"):
        read_domains(path, 1)


async def test_the_rate_limit_holds_each_server_to_its_rate():
    limits = Limits(100.0)  # bursts of 10
    started = time.monotonic()
    await asyncio.gather(*(limits.wait("a") for _ in range(40)))
    assert 0.28 <= time.monotonic() - started < 0.6  # 30 beyond the burst, at 100 a second
    started = time.monotonic()
    await asyncio.gather(*(limits.wait("b") for _ in range(10)))  # another server: its own burst
    assert time.monotonic() - started < 0.05
    done = []
    threads = [threading.Thread(target=lambda: done.append(time.sleep(limits.reserve("c")))) for _ in range(30)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0.18 <= time.monotonic() - started < 0.5 and len(done) == 30 and limits.queries == 80
