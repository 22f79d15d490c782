"""Free text from people (a server's institution and admins, notes on a confirm, an extend or a
cancel, a token's name) is one line of printable text without markup, of bounded length, or it is
refused naming the field: 422 from the served dashboard's API and pages, exit 2 from the CLI.
Nothing is started and the portal stand-in is sent nothing; a refused note is not in the audit."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.serve import serving
from mailmove.store.db import sessions
from mailmove.store.records import audit_trail
from tests.support.moves import started_since, terminate_running, until_stage
from tests.support.processes import mailmove
from tests.support.server_move import SERVER as SERVER_MOVE
from tests.support.server_move import replaced

CHEM = "chem.sandbox.test"
WID, SERVER = f"domain-move:{CHEM}", f"server-move:mx2.{CHEM}"
MOVE = SERVER_MOVE | {"portal": "http"}
HOSTILE = [
    "Chemistry\r\nX-Injected: yes",
    "Chemistry\nsecond line",
    "Chem\x1b]0;pwned\x07istry",
    "Chem\x00istry",
    "<script>alert(1)</script>",
    "Chem\u202eyrtsim",  # a bidi override: reads otherwise than it is
    "C" * 201,
]


@pytest.fixture
async def dash(cli_world, dev_env):
    world, settings, config = cli_world
    tokens = {role: issue_token(settings, f"{role}-user", role) for role in ("operator", "admin")}

    def client(role: str) -> httpx.AsyncClient:
        base = f"http://{settings.dashboard.listen}"
        return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tokens[role]}"}, timeout=60)

    async with serving(settings, dev_env.client, login=False):
        yield world, settings, config, client
    await terminate_running(dev_env.client, WID, SERVER)


@pytest.mark.parametrize("text", HOSTILE)
async def test_an_institution_that_is_not_one_line_of_text_is_refused(dash, dev_env, text):
    world, settings, config, client = dash
    since = datetime.now(UTC)
    async with client("operator") as c:
        r = await c.post("/api/server-moves", json=MOVE | {"institution": text})
    assert r.status_code == 422 and r.json()["field"] == "institution", r.text
    assert not await started_since(dev_env.client, SERVER, since)
    assert not world.registry.requests  # the portal stand-in got nothing


@pytest.mark.parametrize("admin", ["xy34\x00ghij", "<b>xy34ghij</b>", "x" * 40])
async def test_an_admin_that_is_not_a_short_line_is_refused(dash, admin):
    world, settings, config, client = dash
    async with client("operator") as c:
        r = await c.post("/api/server-moves", json=MOVE | {"admins": ["ab12cdef", admin]})
    assert r.status_code == 422 and r.json()["field"] == "admin", r.text


async def test_the_form_the_cli_and_a_token_name(dash, dev_env):
    world, settings, config, client = dash
    since = datetime.now(UTC)
    form = {k: " ".join(v) if isinstance(v, list) else v for k, v in MOVE.items() if k != "agent"}
    async with client("operator") as c:
        page = await c.post("/start/server", data=form | {"institution": "Chem\r\nX-Injected: yes"})
    assert page.status_code == 422 and "institution:" in page.text
    code, out, err = await mailmove(config, "server", "start", *replaced("--institution", "Chem\r\nX-Injected: yes"))
    assert code == 2 and "institution:" in err, err
    assert not await started_since(dev_env.client, SERVER, since) and not world.registry.requests
    async with client("admin") as c:
        r = await c.post("/api/tokens", json={"name": "ci\r\nadmin", "role": "viewer"})
        assert r.status_code == 422 and r.json()["field"] == "name", r.text
        r = await c.post("/api/tokens", json={"name": "ci", "role": "viewer", "domains": ["<b>.example"]})
        assert r.status_code == 422 and r.json()["field"] == "domains", r.text


async def test_notes_on_confirm_extend_and_cancel(dash, dev_env):
    world, settings, config, client = dash
    async with client("operator") as c:
        assert (
            await c.post("/api/domain-moves", json={"domain": CHEM, "legacy_mx": f"mail.{CHEM}"})
        ).status_code == 201
        await until_stage(dev_env.client.get_workflow_handle(WID), "request_domain", "waiting")
        for action, body in (
            ("confirm", {"stage": "request_domain", "note": "filed\r\nconfirmed by: the centre"}),
            ("extend", {"duration": "1d", "note": "\x1b[31mred"}),
            ("cancel", {"note": '<img src=x onerror="alert(1)">'}),
            ("confirm", {"stage": "request_domain", "note": "n" * 2001}),
        ):
            r = await c.post(f"/api/migrations/{WID}/{action}", json=body)
            assert r.status_code == 422 and r.json()["field"] == "note", (action, r.text)
        code, out, err = await mailmove(config, "confirm", CHEM, "request_domain", "--note", "x\x1b]0;title\x07")
        assert code == 2 and "note:" in err, err
        r = await c.post(f"/api/migrations/{WID}/confirm", json={"stage": "request_domain", "note": "ticket 42"})
        assert r.status_code == 200, r.text
    with sessions(settings.database.url)() as session:
        details = [e.detail for e in audit_trail(session, WID) if e.action in ("confirm", "extend", "cancel")]
    assert details == ["ticket 42"], details


async def test_lists_have_a_maximum(dash, dev_env):
    """Each sender domain is a DNS lookup at every preflight, each lost address a comparison in
    the workflow's own task: a request names at most so many, or it is refused naming the field."""
    world, settings, config, client = dash
    since = datetime.now(UTC)
    async with client("operator") as c:
        many = [f"d{i}.{CHEM}" for i in range(101)]
        r = await c.post("/api/server-moves", json=MOVE | {"sender_domains": many})
        assert r.status_code == 422 and r.json()["field"] == "sender_domain", r.text
        r = await c.post("/api/server-moves", json=MOVE | {"admins": [f"ab{i:06d}" for i in range(101)]})
        assert r.status_code == 422 and r.json()["field"] == "admin", r.text
        r = await c.post(
            f"/api/migrations/{WID}/confirm", json={"stage": "await_registration", "lost": ["a@b.c"] * 5001}
        )
        assert r.status_code == 422 and r.json()["field"] == "lost", r.text
    assert not await started_since(dev_env.client, SERVER, since)
