"""Every page and API call of the dashboard against the dev server, the sandbox and the store:
401 without login, 403 for a viewer's action and for a POST without the CSRF token, 404 for
an unknown id, 422 naming the field; the actor of each action in the audit history."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import replace
from pathlib import Path

import httpx
import jsonschema
import pytest

from mailmove.dashboard.app import create_app
from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.pages import HERE, HTMX
from mailmove.sandbox.oidc import OidcProvider
from mailmove.store.db import sessions
from mailmove.store.records import audit_trail, list_migrations
from tests.support.dashboard import DOMAIN, LEGACY, WID, login
from tests.support.moves import terminate_running, until_stage
from tests.support.polling import wait_for
from tests.support.reports import SCHEMA
from tests.support.settings import settings_for


@pytest.fixture
async def dash(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    await worker_for(dev_env.client, settings)
    app = create_app(settings, dev_env.client)
    tokens = {role: issue_token(settings, f"{role}-user", role) for role in ("viewer", "operator", "admin")} | {
        "elsewhere": issue_token(settings, "eve", "operator", ("other.sandbox.test",))
    }

    def client(token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tokens[token]}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash", headers=headers)

    yield settings, app, tokens, client, dev_env
    await terminate_running(dev_env.client, WID, "server-move:mx2.chem.sandbox.test")


async def started(dash) -> None:
    settings, app, tokens, client, env = dash
    async with client("operator") as c:
        r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY})
        assert r.status_code == 201 and r.json() == {"id": WID, "state": "running"}
    await until_stage(env.client.get_workflow_handle(WID), "request_domain", "waiting")

    def stored_waiting() -> bool:  # the store, the list's read model, follows the workflow by one activity
        with sessions(settings.database.url)() as session:
            return [(m.stage, m.state) for m in list_migrations(session)] == [("request_domain", "waiting")]

    await wait_for(lambda: asyncio.to_thread(stored_waiting), what="the store to show the wait")


async def flashed(c: httpx.AsyncClient, r: httpx.Response) -> str:
    """An action's result: not in the URL it redirects to, but shown on that page."""
    assert r.status_code == 303 and "?" not in r.headers["location"]
    box = re.search(r'role="status">([^<]*)<', (await c.get(r.headers["location"])).text)
    return box.group(1) if box else ""


def actors(settings) -> list[tuple[str, str]]:
    with sessions(settings.database.url)() as session:
        return [(e.actor, e.action) for e in audit_trail(session, WID)]


async def test_without_login(dash):
    settings, app, tokens, client, env = dash
    async with client() as c:
        for path in ("/api/migrations", f"/api/migrations/{WID}", "/api/tokens"):
            r = await c.get(path)
            assert r.status_code == 401 and "not signed in" in r.json()["message"]
        r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY})
        assert r.status_code == 401
        for path in ("/", f"/migrations/{WID}", "/start"):
            r = await c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert (await c.get("/login")).status_code == 200
        r = await c.get("/api/migrations", headers={"Authorization": "Bearer mm_nope_nope"})
        assert r.status_code == 401


async def test_api_reads_and_actions_by_role(dash):
    settings, app, tokens, client, env = dash
    async with client("viewer") as c:
        r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY})
        assert r.status_code == 403 and r.json()["field"] == "role"
    await started(dash)
    async with client("viewer") as c:
        listing = (await c.get("/api/migrations")).json()
        assert [row["id"] for row in listing["rows"]] == [WID] and listing["counts"] == {"waiting": 1}
        assert (await c.get("/api/migrations", params={"state": "done"})).json()["rows"] == []
        shown = (await c.get(f"/api/migrations/{DOMAIN}")).json()  # the bare name
        assert shown["status"]["stage"] == "request_domain" and shown["execution"] == "RUNNING"
        preflight = shown["reports"]["preflight"]  # the check report stored by preflight
        jsonschema.validate(preflight, SCHEMA)
        assert (preflight["stage"], preflight["worst"]) == ("before", "notice")
        assert shown["status"]["checks"] == {"preflight": "2 notice"}
        r = await c.post(f"/api/migrations/{WID}/confirm", json={"stage": "request_domain"})
        assert r.status_code == 403
        r = await c.get("/api/migrations/domain-move:unknown.sandbox.test")
        assert r.status_code == 404 and r.json()["field"] == "id"
    async with client("operator") as c:
        r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY})
        assert r.status_code == 409 and "already moving" in r.json()["message"]
        r = await c.post(f"/api/migrations/{WID}/confirm", json={"stage": "await_registration"})
        assert r.status_code == 409 and r.json()["field"] == "stage"
        r = await c.post(f"/api/migrations/{WID}/extend", json={"duration": "soon"})
        assert r.status_code == 422 and r.json()["field"] == "duration"
        r = await c.post(f"/api/migrations/{WID}/confirm", json={"stage": "request_domain", "note": "ticket 9"})
        assert r.status_code == 200 and r.json() == {"result": "request_domain confirmed"}
        r = await c.post(f"/api/migrations/{WID}/cancel", json={"note": "test"})
        assert r.status_code == 200 and "restored" in r.json()["result"]
    assert ("operator-user", "confirm") in actors(settings) and ("operator-user", "cancel") in actors(settings)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"domain": "bad domain.test", "legacy_mx": LEGACY}, "domain"),
        ({"domain": DOMAIN, "legacy_mx": "a2681.mx.gw.sandbox.test"}, "legacy_mx"),
        ({"domain": DOMAIN}, "legacy_mx"),
        ({"domain": DOMAIN, "legacy_mx": LEGACY, "legacy_preference": 20}, "legacy_preference"),
        ({"domain": DOMAIN, "legacy_mx": LEGACY, "dns": "magic"}, "dns"),
    ],
)
async def test_bad_input_is_422_naming_the_field(dash, body, field):
    settings, app, tokens, client, env = dash
    async with client("operator") as c:
        r = await c.post("/api/domain-moves", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.json()


async def test_server_move_through_the_api(dash):
    settings, app, tokens, client, env = dash
    body = {"old": LEGACY, "new": "mx2.chem.sandbox.test", "new_ipv4": "127.0.0.2", "institution": "Chem",
            "admins": ["ab12cdef"], "contact": "postmaster@chem.sandbox.test", "sender_domains": [DOMAIN]}  # fmt: skip
    async with client("operator") as c:
        r = await c.post("/api/server-moves", json=body)
        assert r.status_code == 422 and r.json()["field"] == "admin"
        body |= {"admins": ["ab12cdef", "xy34ghij"], "agent": False}
        r = await c.post("/api/server-moves", json=body | {"configure_mta": True})
        assert r.status_code == 422 and r.json()["field"] == "configure_mta"  # Postfix is changed by the agent
        r = await c.post("/api/server-moves", json=body)
        assert r.status_code == 201 and r.json()["id"] == "server-move:mx2.chem.sandbox.test"
        r = await c.post("/api/migrations/server-move:mx2.chem.sandbox.test/cancel", json={})
        assert r.status_code == 200


async def test_pages_csrf_and_the_audit(dash):
    settings, app, tokens, client, env = dash
    await started(dash)
    async with client() as c:
        csrf = await login(c, tokens["operator"])
        page = await c.get("/")
        assert page.status_code == 200 and DOMAIN in page.text and 'hx-trigger="every 3s"' in page.text
        assert f'src="/static/{HTMX}"' in page.text
        assert "<table>" in (await c.get("/?partial=true")).text and "<html" not in (await c.get("/?partial=true")).text
        detail = await c.get(f"/migrations/{WID}")
        assert (
            detail.status_code == 200
            and "Confirm request_domain" in detail.text
            and "antrag-maildomain.php" in detail.text
        )
        assert "Check at preflight (stage before): 2 notice" in detail.text
        assert '<td class="verdict notice">notice</td><td>spf.record</td>' in detail.text
        r = await c.post(f"/migrations/{WID}/confirm", data={"stage": "request_domain", "note": "by form"})
        assert r.status_code == 403  # no CSRF token
        r = await c.post(
            f"/migrations/{WID}/confirm", data={"stage": "request_domain", "note": "by form", "csrf": "forged"}
        )
        assert r.status_code == 403
        r = await c.post(
            f"/migrations/{WID}/confirm", data={"stage": "request_domain", "note": "by form", "csrf": csrf}
        )
        assert r.status_code == 303 and r.headers["location"] == f"/migrations/{WID}"
        shown = await c.get(r.headers["location"])
        assert 'role="status">request_domain confirmed<' in shown.text and "operator-user" in shown.text
        r = await c.post(f"/migrations/{WID}/confirm", data={"stage": "request_domain", "csrf": csrf})
        assert r.status_code == 409 and "stage: request_domain is not waiting" in r.text
        assert (await c.get("/migrations/domain-move:nope.sandbox.test")).status_code == 404
        r = await c.post("/start/domain", data={"domain": "x y", "legacy_mx": LEGACY, "csrf": csrf})
        assert r.status_code == 422 and "domain:" in r.text
    assert ("operator-user", "confirm") in actors(settings)


async def test_a_viewer_sees_but_cannot_act(dash):
    settings, app, tokens, client, env = dash
    await started(dash)
    async with client() as c:
        csrf = await login(c, tokens["viewer"])
        detail = await c.get(f"/migrations/{WID}")
        assert detail.status_code == 200 and "Confirm request_domain" not in detail.text
        r = await c.post(f"/migrations/{WID}/cancel", data={"csrf": csrf})
        assert r.status_code == 403
        assert (await c.get("/start")).status_code == 403


async def test_an_operator_limited_to_other_domains(dash):
    settings, app, tokens, client, env = dash
    await started(dash)
    async with client("elsewhere") as c:
        assert (await c.get("/api/migrations")).json()["rows"] == []
        assert (await c.get(f"/api/migrations/{WID}")).status_code == 404
        r = await c.post(f"/api/migrations/{WID}/cancel", json={})
        assert r.status_code == 404
        r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": LEGACY})
        assert r.status_code == 422 and r.json()["field"] == "domain"


async def test_tokens_login_token_and_revocation(dash):
    settings, app, tokens, client, env = dash
    async with client("operator") as c:
        assert (await c.post("/api/tokens", json={"name": "x", "role": "viewer"})).status_code == 403
    async with client("admin") as c:
        r = await c.post("/api/tokens", json={"name": "", "role": "viewer"})
        assert r.status_code == 422 and r.json()["field"] == "name"
        r = await c.post("/api/tokens", json={"name": "ci", "role": "root"})
        assert r.status_code == 422 and r.json()["field"] == "role"
        made = (await c.post("/api/tokens", json={"name": "ci", "role": "viewer"})).json()
        listed = (await c.get("/api/tokens")).json()
        assert made["token"] not in str(listed) and any(t["id"] == made["id"] for t in listed)
        assert (await c.post(f"/api/tokens/{made['id']}/revoke")).status_code == 200
        assert (await c.post("/api/tokens/nope/revoke")).status_code == 404
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as c:
        r = await c.get("/api/migrations", headers={"Authorization": f"Bearer {made['token']}"})
        assert r.status_code == 401  # revoked
    once = issue_token(settings, "admin (login token)", "admin", once=True)
    async with client() as c:
        await login(c, once)
    async with client() as c:
        page = await c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = await c.post("/login", data={"token": once, "csrf": csrf})
        assert r.status_code == 401 and "used up" in r.text


async def test_proxy_identity_only_from_a_trusted_proxy(dash):
    settings, app, tokens, client, env = dash
    proxied = replace(
        settings,
        dashboard=replace(
            settings.dashboard,
            proxy_header="X-Remote-User",
            trusted_proxies=("127.0.0.1",),
            roles={"carol": "operator"},
        ),
    )
    trusted = create_app(proxied, env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=trusted), base_url="http://dash") as c:
        r = await c.get("/api/migrations", headers={"X-Remote-User": "carol"})
        assert r.status_code == 200
        r = await c.post("/api/tokens", json={"name": "x"}, headers={"X-Remote-User": "carol"})
        assert r.status_code == 403  # an operator; and no cookie-less bypass of CSRF either
    untrusted = create_app(replace(proxied, dashboard=replace(proxied.dashboard, trusted_proxies=("10.9.9.9",))))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=untrusted), base_url="http://dash") as c:
        assert (await c.get("/api/migrations", headers={"X-Remote-User": "carol"})).status_code == 401


async def test_health_metrics_openapi_and_the_vendored_htmx(dash):
    settings, app, tokens, client, env = dash
    await started(dash)
    async with client() as c:
        health = await c.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True}
        assert (await c.get("/metrics")).status_code == 401
    async with client("viewer") as c:
        metrics = (await c.get("/metrics")).text
        assert 'mailmove_migrations{kind="domain",stage="request_domain",state="waiting"} 1.0' in metrics
        assert 'mailmove_stage_duration_seconds_count{kind="domain",stage="preflight"} 1.0' in metrics
        schema = (await c.get("/openapi.json")).json()
        assert {"/api/migrations", "/api/migrations/{id}/confirm", "/api/domain-moves", "/api/tokens"} <= set(
            schema["paths"]
        )
        js = await c.get(f"/static/{HTMX}")
    recorded = re.search(r"SHA-256 `([0-9a-f]{64})`", (HERE / "static" / "VENDORED.md").read_text()).group(1)
    assert hashlib.sha256(js.content).hexdigest() == recorded
    assert Path(HERE / "static" / HTMX).stat().st_size == len(js.content)


async def test_oidc_login(dash):
    """The authorization code flow against the stand-in provider, over real HTTP."""
    settings, app, tokens, client, env = dash
    provider = OidcProvider("mailmove-dashboard", "s3cret", user="carol").start()
    try:
        secret = Path(settings.var_dir) / "oidc-secret"
        secret.write_text("s3cret\n")
        oidc = replace(
            settings.dashboard,
            oidc_issuer=provider.issuer,
            oidc_client_id="mailmove-dashboard",
            oidc_client_secret_file=str(secret),
            roles={"carol": "operator"},
            operator_domains={"carol": ("chem.sandbox.test",)},
        )
        signed = create_app(replace(settings, dashboard=oidc), env.client)
        transport = httpx.ASGITransport(app=signed)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c, httpx.AsyncClient() as browser:
            assert "single sign-on" in (await c.get("/login")).text
            to_provider = await c.get("/login/oidc", params={"next": "/start"})
            assert to_provider.status_code == 302 and to_provider.headers["location"].startswith(provider.issuer)
            back = await browser.get(to_provider.headers["location"])  # the provider signs carol in
            assert back.status_code == 302 and back.headers["location"].startswith("http://dash/login/oidc/callback")
            done = await c.get(back.headers["location"])
            assert done.status_code == 303 and done.headers["location"] == "/start"
            page = await c.get("/start")
            assert page.status_code == 200 and "carol (operator: chem.sandbox.test)" in page.text
            replayed = await c.get(back.headers["location"])  # the code and state are spent
            assert replayed.status_code == 401 and replayed.json()["field"] == "oidc"
    finally:
        provider.stop()


async def test_the_remaining_pages_and_forms(dash):
    """Logout, the partial detail, extend and cancel by form, the server form's errors and start."""
    settings, app, tokens, client, env = dash
    await started(dash)
    async with client("operator") as api:
        await api.post(f"/api/migrations/{WID}/confirm", json={"stage": "request_domain"})
    await until_stage(env.client.get_workflow_handle(WID), "await_registration", "waiting")
    async with client() as c:
        csrf = await login(c, tokens["operator"])
        fragment = await c.get(f"/migrations/{WID}?partial=true")
        assert fragment.status_code == 200 and "<html" not in fragment.text and "Extend by" in fragment.text
        r = await c.post(f"/migrations/{WID}/extend", data={"duration": "2d", "note": "holidays", "csrf": csrf})
        assert "escalates at" in await flashed(c, r)
        r = await c.post(f"/migrations/{WID}/extend", data={"duration": "later", "csrf": csrf})
        assert r.status_code == 422 and "duration:" in r.text
        form = {"old": LEGACY, "new": "mx2.chem.sandbox.test", "new_ipv4": "127.0.0.256", "csrf": csrf}
        r = await c.post("/start/server", data=form)
        assert r.status_code == 422 and "new_ipv4:" in r.text and 'value="mx2.chem.sandbox.test"' in r.text
        form |= {"new_ipv4": "127.0.0.2", "institution": "Chem", "admins": "ab12cdef xy34ghij",
                 "contact": "postmaster@chem.sandbox.test", "sender_domains": DOMAIN}  # fmt: skip
        r = await c.post("/start/server", data=form | {"configure_mta": "on"})  # Postfix, without the agent
        assert r.status_code == 422 and "configure_mta:" in r.text and 'name="configure_mta" checked' in r.text
        r = await c.post("/start/server", data=form)  # no agent box ticked: firewall and relay test by hand
        assert r.status_code == 303 and r.headers["location"].startswith(
            "/migrations/server-move:mx2.chem.sandbox.test"
        )
        page = await c.get(r.headers["location"])
        assert "<summary>Exim instead of Postfix</summary>" in page.text and "hosts_require_tls = *" in page.text
        r = await c.post(f"/migrations/{WID}/cancel", data={"note": "by form", "csrf": csrf})
        assert "restored" in await flashed(c, r)
        assert (await c.post("/logout", data={"csrf": csrf})).status_code == 303
        assert (await c.get("/")).status_code == 303  # signed out
    assert ("operator-user", "extend") in actors(settings) and ("operator-user", "cancel") in actors(settings)


async def test_health_names_what_does_not_answer(dash):
    settings, app, tokens, client, env = dash
    from mailmove.base.config import TemporalConfig
    from mailmove.sandbox.bind import free_port

    port = free_port()
    cut_off = replace(settings, temporal=TemporalConfig(address=f"127.0.0.1:{port}"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(cut_off)), base_url="http://d") as c:
        health = await c.get("/healthz")
    assert health.status_code == 503 and health.json() == {"ok": False, "temporal": "does not answer"}
    assert str(port) not in health.text  # anyone may ask: where the servers are is not theirs to read


async def test_addresses_from_the_api_and_on_the_detail_page(dash):
    settings, app, tokens, client, env = dash
    async with client("operator") as c:
        bad = {"domain": DOMAIN, "legacy_mx": LEGACY, "addresses": f"alice@{DOMAIN}\nnot-an-address\n"}
        r = await c.post("/api/domain-moves", json=bad)
        assert r.status_code == 422 and r.json()["field"] == "addresses" and "addresses:2:" in r.json()["message"]
        good = bad | {"addresses": f"alice@{DOMAIN}\ninfo@{DOMAIN}\n"}
        assert (await c.post("/api/domain-moves", json=good)).status_code == 201
        await until_stage(env.client.get_workflow_handle(WID), "request_domain", "waiting")
        page = await c.get(f"/migrations/{WID}")
        assert 'id="addresses"' in page.text and f"alice@{DOMAIN}" in page.text and "pending" in page.text
        shown = (await c.get(f"/api/migrations/{WID}")).json()["status"]
        assert [(a["address"], a["state"]) for a in shown["addresses"]] == [
            (f"alice@{DOMAIN}", "pending"),
            (f"info@{DOMAIN}", "pending"),
        ]
        assert shown["form"]["whitelist"] == f"alice@{DOMAIN}\ninfo@{DOMAIN}"
