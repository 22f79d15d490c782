"""`mailmove wave`: a CSV with bad rows starts nothing and names every bad row and field (exit
2); a good one starts a wave whose progress and failed rows `wave show` prints."""

from __future__ import annotations

import json

import httpx
import pytest

from mailmove.dashboard.app import create_app
from mailmove.dashboard.auth import issue_token
from mailmove.service.waves import parse_rate, prepare_wave, start_wave
from mailmove.store.db import sessions
from mailmove.store.records import list_migrations
from tests.support.moves import terminate_running
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.settings import settings_for

DOMAINS = ("chem.sandbox.test", "phys.sandbox.test")


@pytest.fixture
async def world(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(domains=DOMAINS, confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    await worker_for(dev_env.client, settings)
    yield world, settings, world.root / "mailmove.toml"
    await terminate_running(dev_env.client, "wave:autumn", "wave:winter", *(f"domain-move:{d}" for d in DOMAINS))


async def test_bad_rows_start_nothing_and_are_all_named(world, tmp_path):
    _, settings, config = world
    path = tmp_path / "autumn.csv"
    path.write_text(
        "kind,domain,legacy_mx,old,new,new_ipv4,configure_mta\n"
        "domain,chem.sandbox.test,mail.chem.sandbox.test,,,\n"
        "domain,phys..sandbox.test,mail.phys.sandbox.test,,,\n"
        "domain,bio.sandbox.test,a2681.mx.gw.sandbox.test,,,\n"
        "server,,,mail.chem.sandbox.test,mx2.chem.sandbox.test,127.0.0.300\n"
        "domain,chem.sandbox.test,mail.chem.sandbox.test,,,\n"
        "ftp,x.sandbox.test,,,,\n"
        "server,,,mail.chem.sandbox.test,mx3.chem.sandbox.test,127.0.0.3,maybe\n"
    )
    code, out, err = await mailmove(config, "wave", "start", str(path))
    assert code == 2, (out, err)
    assert "6 bad row(s), nothing started" in err
    for expected in (
        "autumn.csv:3: domain:",
        "autumn.csv:4: legacy_mx:",
        "autumn.csv:5: new_ipv4:",
        "autumn.csv:6: domain: chem.sandbox.test is on line 2 already",
        "autumn.csv:7: kind:",
        "autumn.csv:8: configure_mta: 'maybe' is not yes or no",
    ):
        assert expected in err
    with sessions(settings.database.url)() as session:
        assert list_migrations(session) == []
    code, out, err = await mailmove(config, "wave", "start", str(path), "--rate", "fast")
    assert code == 2 and "--rate" in err
    code, out, err = await mailmove(config, "wave", "start", str(path), "--concurrency", "0")
    assert code == 2 and "--concurrency" in err


async def test_a_wave_starts_and_shows_its_progress(world, dev_env, tmp_path):
    world_, settings, config = world
    path = tmp_path / "autumn.csv"
    path.write_text(
        "domain,legacy_mx\nchem.sandbox.test,mail.chem.sandbox.test\nphys.sandbox.test,nowhere.sandbox.test\n"
    )
    code, out, err = await mailmove(config, "wave", "start", str(path), "--concurrency", "2", "--rate", "2/s", "--json")
    assert code == 0, err
    assert json.loads(out) == {"id": "wave:autumn", "rows": 2, "concurrency": 2, "rate": 120.0}

    async def settled():
        code, out, _ = await mailmove(config, "wave", "show", "autumn", "--json")
        shown = json.loads(out)
        return shown if shown["counts"] == {"running": 1, "failed": 1} else None

    shown = await wait_for(settled, timeout=60, what="one move failed, one running")
    failed = next(r for r in shown["status"]["rows"] if r["state"] == "failed")
    assert failed["line"] == 3 and "nowhere.sandbox.test" in failed["message"]
    code, out, err = await mailmove(config, "wave", "show", "wave:autumn")
    assert code == 0 and "wave:autumn  1/2 finished" in out and "line 3 domain-move:phys.sandbox.test: failed" in out
    code, out, err = await mailmove(config, "wave", "show", "spring")
    assert code == 2 and "no wave wave:spring" in err


def test_rates():
    assert (
        parse_rate("30/min") == 30 and parse_rate("1/s") == 60 and parse_rate("120/h") == 2 and parse_rate("12") == 12
    )


async def test_the_dashboard_shows_a_wave(world, dev_env, tmp_path):
    _, settings, config = world
    path = tmp_path / "autumn.csv"
    path.write_text("domain,legacy_mx\n" + "".join(f"{d},mail.{d}\n" for d in DOMAINS))
    await start_wave(dev_env.client, settings, await prepare_wave(settings, path, 1, "60/min", name="winter"))
    app = create_app(settings, dev_env.client)
    tokens = {
        "viewer": issue_token(settings, "vera", "viewer"),
        "phys": issue_token(settings, "pat", "operator", ("phys.sandbox.test",)),
    }

    def client(who: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash", headers=headers)

    async with client("viewer") as c:
        assert "winter" in [w["name"] for w in (await c.get("/api/waves")).json()]

        async def loaded():  # the workflow reads its rows from the store first
            shown = (await c.get("/api/waves/winter")).json()
            return shown if shown["status"]["rows"] else None

        shown = await wait_for(loaded, what="the wave's rows")
        assert shown["status"]["total"] == 2
        assert [r["subject"] for r in shown["status"]["rows"]] == list(DOMAINS) and shown["id"] == "wave:winter"
        page = await c.get("/waves/winter")
        assert page.status_code == 200 and '<progress max="2"' in page.text and "Need attention (0)" in page.text
        assert (await c.get("/api/waves/spring")).status_code == 404
    async with client("phys") as c:  # an operator sees the rows of their domains only
        shown = (await c.get("/api/waves/winter")).json()
        assert [r["subject"] for r in shown["status"]["rows"]] == ["phys.sandbox.test"]
