"""`mailmove survey` as a postmaster runs it: a table and counts with what DNS said kept as
plain text, `--json`, a zone by AXFR, bad input exit 2 naming the line before anything is
asked, and the wave file started by `mailmove wave start` unchanged."""

from __future__ import annotations

import json
import uuid

import pytest

from mailmove.base.vocabulary import SurveyClass
from tests.support.moves import terminate_running
from tests.support.payloads import PAYLOAD_KEY
from tests.support.processes import mailmove
from tests.support.survey_world import (
    CAMPUS,
    PARENT,
    CampusWorld,
    campus,
    record_moves,
    silent_server,
    survey_config,
    write_toml,
)

pytestmark = [pytest.mark.bind, pytest.mark.slow]  # the zones are served by a real BIND

SMALL = campus(scale=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("campus")
    silent = silent_server()
    with CampusWorld(SMALL.zones, root=root / "dns") as dns_world:
        raw = survey_config(dns_world, silent, f"sqlite:///{root / 'mailmove.db'}")
        record_moves(raw["database"]["url"])
        domains = root / "domains.txt"
        domains.write_text("# the campus\n" + "".join(f"{d}  # {c}\n" for d, c in SMALL.expected.items()))
        yield raw, write_toml(root / "mailmove.toml", raw), domains
    silent.close()


async def test_the_table_counts_every_class_and_shows_dns_data_as_text(world, tmp_path):
    _, config, domains = world
    code, out, err = await mailmove(config, "survey", str(domains))
    assert code == 0, err
    for cls in SurveyClass:
        n = sum(c == cls for c in SMALL.expected.values())
        assert any(line.replace("│", " ").split() == [cls.value, str(n)] for line in out.splitlines()), cls
    hostile = tmp_path / "hostile.txt"
    hostile.write_text(f"hostile.{PARENT}\n")
    code, out, err = await mailmove(config, "survey", str(hostile))
    assert code == 0, err
    assert "[b]x[/b]" in out and "\x1b" not in out + err  # the TXT's markup printed as it is, no escape sequence


async def test_json_a_zone_and_the_wave_file_started_unchanged(world, dev_env, tmp_path):
    raw, _, domains = world
    raw = {
        **raw,
        "temporal": {
            "address": dev_env.client.service_client.config.target_host,
            "task_queue": f"tq-{uuid.uuid4()}",
            "encryption_key_files": [str(PAYLOAD_KEY)],
        },
    }
    config = write_toml(tmp_path / "mailmove.toml", raw)
    wave = tmp_path / "autumn.csv"
    code, out, err = await mailmove(config, "survey", str(domains), "--json", "--wave", str(wave), "--concurrency", "8")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["counts"][SurveyClass.NOT_YET] == sum(c == SurveyClass.NOT_YET for c in SMALL.expected.values())
    assert {d["domain"]: d["class"] for d in shown["domains"]} == SMALL.expected
    rows = [*(f"n{i:03}.{PARENT}" for i in range(6)), *(f"{n}.{PARENT}" for n in ("dane", "sts", "hostile"))]
    assert shown["wave"] == {"file": str(wave), "rows": len(rows)}
    assert sorted(wave.read_text().splitlines()[1:]) == sorted(f"{d},mail.{d}" for d in rows)
    try:
        code, out, err = await mailmove(config, "wave", "start", str(wave), "--json")
        assert code == 0, err
        assert json.loads(out)["rows"] == len(rows)
    finally:
        await terminate_running(dev_env.client, "wave:autumn")
    code, out, err = await mailmove(config, "survey", "--zone", CAMPUS, "--json")
    assert code == 0, err
    assert {d["domain"] for d in json.loads(out)["domains"]} == {
        f"{n}{CAMPUS}" for n in ("", "ns1.", "mail.", "www.", "lists.", "spfonly.")
    }


async def test_bad_input_is_exit_2_naming_the_line(world, tmp_path):
    _, config, domains = world
    bad = tmp_path / "domains.txt"
    bad.write_text("# ours\nchem.example.org\n[red]chem[/red].example.org\n")
    code, out, err = await mailmove(config, "survey", str(bad))
    assert code == 2 and out == ""
    assert "domains.txt:3: '[red]chem[/red].example.org' is not a host name" in err
    for args, field in (
        ((str(domains), "--zone", CAMPUS), "FILE"),
        ((), "FILE"),
        ((str(domains), "--concurrency", "0"), "--concurrency"),
        ((str(tmp_path / "missing.txt"),), "FILE"),
        (("--zone", "not a zone"), "--zone"),
    ):
        code, out, err = await mailmove(config, "survey", *args)
        assert code == 2 and f"error: {field}:" in err, (args, err)
