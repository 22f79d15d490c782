"""An operator limited to one department (chem) against the served dashboard of a world with two
(chem and phys): every name of a domain or server move that is not theirs is refused, naming the
field, before the request is validated, so that the errors say nothing about phys's configuration
(its zone's TSIG key, here); names are compared in any case and IDN form; the wave list shows
them only the waves that hold their rows. Starting waves is the CLI's alone: the dashboard has
no route for it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.serve import serving
from mailmove.service.waves import prepare_wave, start_wave
from tests.support.moves import started_since, terminate_running
from tests.support.polling import wait_for
from tests.support.server_move import SERVER
from tests.support.settings import settings_for
from workflows.wave import WaveWorkflow

CHEM, PHYS = "chem.sandbox.test", "phys.sandbox.test"
SECRET_KEY = "phys-private-key"  # named by phys's zone only: a limited operator must never read it
DOMAIN = {"domain": CHEM, "legacy_mx": f"mail.{CHEM}"}


@pytest.fixture
async def stack(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(domains=(CHEM, PHYS), confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    await worker_for(dev_env.client, settings)
    zones = tuple(replace(z, tsig_key=SECRET_KEY) if z.name == PHYS else z for z in settings.dns.zones)
    served = replace(settings, dns=replace(settings.dns, zones=zones))
    tokens = {
        "chem": issue_token(settings, "carol", "operator", (CHEM,)),
        "viewer": issue_token(settings, "vic", "viewer"),
    }

    def client(who: str) -> httpx.AsyncClient:
        base = f"http://{settings.dashboard.listen}"
        return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=60)

    async with serving(served, dev_env.client, login=False):
        yield world, settings, client
    await terminate_running(dev_env.client, f"server-move:mx2.{CHEM}", f"domain-move:{CHEM}", f"domain-move:{PHYS}")


async def test_the_reported_attack_a_server_move_naming_phys(stack, dev_env):
    """chem's operator, chem's new server, phys's old server and sender domain: refused, nothing filed."""
    world, settings, client = stack
    since = datetime.now(UTC)
    async with client("chem") as carol:
        r = await carol.post("/api/server-moves", json=SERVER | {"old": f"mail.{PHYS}", "sender_domains": [PHYS]})
    assert r.status_code == 422 and r.json()["field"] == "old", r.text
    assert PHYS in r.json()["message"] and "not within your domains" in r.json()["message"]
    assert not await started_since(dev_env.client, f"server-move:mx2.{CHEM}", since)
    assert not world.registry.requests


@pytest.mark.parametrize(
    "change,field",
    [
        ({"old": f"mail.{PHYS}"}, "old"),
        ({"new": f"mx2.{PHYS}"}, "new"),
        ({"new": "MX2.Phys.Sandbox.Test."}, "new"),
        ({"new": "mx2.\uff50\uff48\uff59\uff53.sandbox.test"}, "new"),  # fullwidth "phys": the same name by UTS 46
        ({"sender_domains": [CHEM, PHYS]}, "sender_domain"),
        ({"contact": f"postmaster@{PHYS}"}, "contact"),
        ({"mail_from": f"probe@{PHYS}"}, "mail_from"),
        ({"rcpt": f"someone@{PHYS}"}, "rcpt"),
        # within the rules: chem's names in any form, mailboxes outside every managed zone
        ({"new": "MX2.\uff23\uff28\uff25\uff2d.sandbox.test"}, "new_ipv4"),
        ({"contact": "chem-admin@example.org", "mail_from": "probe@example.org"}, "new_ipv4"),
    ],
)
async def test_every_name_of_a_server_move_before_validation(stack, change, field):
    """new_ipv4 is wrong in every request: its error shows that validation was reached."""
    world, settings, client = stack
    async with client("chem") as carol:
        r = await carol.post("/api/server-moves", json=SERVER | {"new_ipv4": "not an address"} | change)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


@pytest.mark.parametrize(
    "change,field",
    [
        ({"domain": PHYS, "legacy_mx": f"mail.{PHYS}"}, "domain"),
        ({"domain": "PHYS.Sandbox.Test."}, "domain"),
        ({"legacy_mx": f"mail.{PHYS}"}, "legacy_mx"),
        ({"addresses": f"alice@{CHEM}\nbob@{PHYS}\n"}, "addresses"),
        ({"addresses": f"@{PHYS}\talice@{CHEM}\n"}, "addresses"),  # a virtual map's catch-all
        ({"addresses": f"alice@{CHEM}\n  bob@{PHYS}\nbob@LAB.{PHYS.upper()}\n"}, "addresses"),
        ({"contact": f"postmaster@{PHYS}"}, "contact"),
        # within the rules: chem in another form, a legacy MX and a contact outside every managed zone
        ({"domain": "\uff23\uff28\uff25\uff2d.sandbox.test"}, "dns"),
        ({"legacy_mx": "mx.hoster.example", "contact": "someone@example.org"}, "dns"),
    ],
)
async def test_every_name_of_a_domain_move_before_validation(stack, change, field):
    """`dns` is wrong in every request: its error shows that validation was reached."""
    world, settings, client = stack
    async with client("chem") as carol:
        r = await carol.post("/api/domain-moves", json=DOMAIN | {"dns": "magic"} | change)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


async def test_the_errors_tell_nothing_of_another_domains_configuration(stack):
    """Validating a phys move names phys's TSIG key and the key file; chem's operator sees neither."""
    world, settings, client = stack
    async with client("chem") as carol:
        r = await carol.post("/api/domain-moves", json={"domain": PHYS, "legacy_mx": f"mail.{PHYS}"})
        page = await carol.post("/start/domain", data={"domain": PHYS, "legacy_mx": f"mail.{PHYS}"})
    assert r.status_code == 422 and r.json()["field"] == "domain", r.text
    for text in (r.text, page.text):
        assert SECRET_KEY not in text and "tsig" not in text.lower() and str(world.dns.keyfile) not in text


async def wave_of(settings, path, rows: str, dev_env) -> str:
    path.write_text("domain,legacy_mx\n" + rows)
    wave = await prepare_wave(settings, path, 1, "1/h", name=f"{path.stem}-{uuid.uuid4().hex[:6]}")
    wid = await start_wave(dev_env.client, settings, wave)

    async def loaded() -> bool:
        return bool((await dev_env.client.get_workflow_handle(wid).query(WaveWorkflow.status)).rows)

    await wait_for(loaded, what=f"{wid} to load its rows")
    return wid


async def test_a_limited_operator_sees_only_the_waves_that_hold_their_rows(stack, dev_env, tmp_path):
    world, settings, client = stack
    chem = await wave_of(settings, tmp_path / "chem", f"{CHEM},mail.{CHEM}\n", dev_env)
    phys = await wave_of(settings, tmp_path / "phys", f"{PHYS},mail.{PHYS}\n", dev_env)
    try:
        async with client("viewer") as vic:
            assert {chem, phys} <= {w["id"] for w in (await vic.get("/api/waves")).json()}
        async with client("chem") as carol:
            seen = {w["id"] for w in (await carol.get("/api/waves")).json()}
            assert chem in seen and phys not in seen, seen
            page = await carol.get("/waves")
            assert page.status_code == 200 and chem.partition(":")[2] in page.text
            assert phys.partition(":")[2] not in page.text
            hidden = await carol.get(f"/api/waves/{phys}")  # not even its name, size or pace
            assert hidden.status_code == 404 and phys.partition(":")[2] not in hidden.text, hidden.text
            assert (await carol.get(f"/waves/{phys.partition(':')[2]}")).status_code == 404
            assert (await carol.get(f"/api/waves/{chem}")).json()["status"]["rows"]
            assert (await carol.post("/api/waves", json={})).status_code == 405  # no start from the dashboard
    finally:
        await terminate_running(dev_env.client, chem, phys, f"domain-move:{CHEM}", f"domain-move:{PHYS}")


async def test_a_limited_operator_cannot_learn_which_moves_another_department_has(stack, dev_env):
    """A bare name is resolved through the store (domain move, else server move); the answer to
    a name that is not theirs is the same whether or not anything of it exists."""
    world, settings, client = stack
    async with client("viewer") as vic, client("chem") as carol:
        admin = issue_token(settings, "root", "admin")
        r = await vic.post(
            "/api/server-moves",
            json=SERVER | {"old": f"mail.{PHYS}", "new": f"mx2.{PHYS}", "sender_domains": [PHYS],
                           "contact": f"postmaster@{PHYS}"},
            headers={"Authorization": f"Bearer {admin}"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        answers = [await carol.get(f"/api/migrations/{name}") for name in (f"mx2.{PHYS}", f"nothing.{PHYS}")]
        assert [a.status_code for a in answers] == [404, 404]
        assert answers[0].json() == answers[1].json() and "server-move" not in answers[0].text
    await terminate_running(dev_env.client, f"server-move:mx2.{PHYS}")


async def test_an_admin_limited_to_a_department_cannot_mint_tokens(stack):
    """Tokens span every domain: an admin limited to chem could otherwise mint an unlimited one."""
    world, settings, client = stack
    limited = issue_token(settings, "ada", "admin", (CHEM,))
    base = f"http://{settings.dashboard.listen}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {limited}"}) as ada:
        assert (await ada.post("/api/tokens", json={"name": "x", "role": "admin"})).status_code == 403
        assert (await ada.get("/api/tokens")).status_code == 403
        assert (await ada.get("/api/migrations")).status_code == 200  # still an admin of chem
