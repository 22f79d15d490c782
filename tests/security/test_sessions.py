"""A browser session lasts no longer than what it was granted: its token revoked, a logout, a
role changed in the configuration, idle and absolute expiry end it or change it at the next
request, even for a cookie saved and replayed; a login makes a new CSRF token. The login token
of `mailmove up` expires, and the next start revokes it if unused. An action's result is a
flash in the session, shown once: a `?result=` in a link shows nothing. Real uvicorn, httpx as
the attacker (and as the browser)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mailmove.base.config import DatabaseConfig, load_settings
from mailmove.base.errors import ConfigError
from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.serve import serving
from mailmove.sandbox.oidc import OidcProvider
from tests.support.dashboard import DOMAIN, LEGACY, WID, login
from tests.support.local_dashboard import base_url, dashboard_settings, on_new_port
from tests.support.moves import terminate_running, until_stage
from tests.support.settings import settings_for

COOKIE = "mailmove_session"


async def replayed(settings, cookie: str, path: str = "/") -> httpx.Response:
    """A saved cookie sent again from a client of its own, as someone who copied it would."""
    async with httpx.AsyncClient(base_url=base_url(settings), headers={"Cookie": f"{COOKIE}={cookie}"}) as c:
        return await c.get(path)


def signed_out(r: httpx.Response) -> bool:
    return r.status_code == 303 and r.headers["location"].startswith("/login")


def token_of(login_url: str) -> str:
    return parse_qs(urlsplit(login_url).query)["token"][0]


async def test_revoking_the_token_ends_the_sessions_it_opened(tmp_path):
    settings = dashboard_settings(tmp_path)
    operator, admin = issue_token(settings, "olga", "operator"), issue_token(settings, "root", "admin")
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as browser:
        await login(browser, operator)
        cookie = browser.cookies[COOKIE]
        assert (await browser.get("/start")).status_code == 200
        r = await browser.get("/api/tokens", headers={"Authorization": f"Bearer {admin}"})
        olga = next(t["id"] for t in r.json() if t["name"] == "olga")
        r = await browser.post(f"/api/tokens/{olga}/revoke", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200
        assert signed_out(await browser.get("/"))
        assert signed_out(await replayed(settings, cookie))
        assert (await replayed(settings, cookie, "/api/migrations")).status_code == 401


async def test_a_cookie_saved_before_logout_is_worth_nothing_after_it(tmp_path):
    settings = dashboard_settings(tmp_path)
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as browser:
        csrf = await login(browser, issue_token(settings, "olga", "operator"))
        cookie = browser.cookies[COOKIE]
        assert (await replayed(settings, cookie)).status_code == 200
        assert (await browser.post("/logout", data={"csrf": csrf})).status_code == 303
        assert signed_out(await replayed(settings, cookie))
        assert (await replayed(settings, cookie, "/api/migrations")).status_code == 401


async def test_a_role_changed_in_the_configuration_applies_at_the_next_request(tmp_path):
    """carol signs in by OIDC as an operator; the dashboard restarted with carol a viewer (same
    store, same secret) serves her saved cookie as a viewer's."""
    provider = OidcProvider("mailmove-dashboard", "s3cret", user="carol").start()
    try:
        secret = tmp_path / "oidc-secret"
        secret.write_text("s3cret\n")
        oidc = {"oidc_issuer": provider.issuer, "oidc_client_id": "mailmove-dashboard"}
        first = dashboard_settings(tmp_path, oidc_client_secret_file=str(secret), roles={"carol": "operator"}, **oidc)
        async with serving(first, None, login=False), httpx.AsyncClient(base_url=base_url(first)) as browser:
            to_provider = await browser.get("/login/oidc", params={"next": "/start"})
            async with httpx.AsyncClient() as at_provider:
                back = await at_provider.get(to_provider.headers["location"])
            done = await browser.get(back.headers["location"])
            assert done.status_code == 303 and done.headers["location"] == "/start"
            page = await browser.get("/start")
            assert page.status_code == 200 and "carol (operator)" in page.text
            cookie = browser.cookies[COOKIE]
        second = on_new_port(first, roles={"carol": "viewer"})
        async with serving(second, None, login=False):
            assert (await replayed(second, cookie, "/start")).status_code == 403
            page = await replayed(second, cookie)
            assert page.status_code == 200 and "carol (viewer)" in page.text
        third = on_new_port(first, roles={"carol": "operator"}, operator_domains={"carol": ("chem.example.org",)})
        async with serving(third, None, login=False):
            assert "carol (operator: chem.example.org)" in (await replayed(third, cookie)).text
    finally:
        provider.stop()


@pytest.mark.slow  # seconds of real time
@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
async def test_a_session_ends_when_idle(tmp_path, store, request):
    """A person's requests come a second apart, a quarter of the idle time, so a loaded machine's
    slow page (CI once took over half a second) cannot end the session between them."""
    settings = dashboard_settings(tmp_path, session_idle=4.0)
    if store == "postgresql":
        settings = replace(settings, database=DatabaseConfig(request.getfixturevalue("postgres_url")))
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as browser:
        await login(browser, issue_token(settings, "olga", "operator"))
        for _ in range(6):  # in use: it lives on past the idle time
            await asyncio.sleep(1.0)
            assert (await browser.get("/")).status_code == 200
        for _ in range(5):  # an open tab's refreshes are not its user's activity
            await asyncio.sleep(1.0)
            await browser.get("/?partial=true", headers={"HX-Request": "true"})
        assert signed_out(await browser.get("/"))


@pytest.mark.slow  # seconds of real time
async def test_a_session_ends_after_its_absolute_lifetime(tmp_path):
    """The signed cookie's own age is no limit: it is signed anew whenever it changes (here by
    the login page, which puts its form's CSRF token in it), so the store must end the session.
    Times are taken from the clock around the login, not summed from sleeps: a loaded CI machine
    once took over a second to sign in, and a session 3 s long had ended before its first page."""
    settings = dashboard_settings(tmp_path, session_idle=60.0, session_absolute=6.0)
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as browser:
        begun = time.monotonic()
        await login(browser, issue_token(settings, "olga", "operator"))
        signed_in = time.monotonic()  # the session was made between these two moments
        await asyncio.sleep(max(0.0, begun + 2.0 - time.monotonic()))
        assert (await browser.get("/")).status_code == 200
        assert (await browser.get("/login")).status_code == 200  # the cookie, changed, is signed now
        await asyncio.sleep(max(0.0, signed_in + 6.5 - time.monotonic()))  # the session over 6 s old, its cookie less
        assert signed_out(await browser.get("/"))


async def test_the_csrf_token_is_made_anew_at_login(tmp_path):
    settings = dashboard_settings(tmp_path)
    async with serving(settings, None, login=False), httpx.AsyncClient(base_url=base_url(settings)) as browser:
        form = await browser.get("/login")
        before = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        after = await login(browser, issue_token(settings, "root", "admin"))
        assert after != before
        r = await browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": before})
        assert r.status_code == 403 and r.json()["field"] == "csrf"
        assert (await browser.post("/logout", data={"csrf": before})).status_code == 403
        assert (await browser.post("/logout", data={"csrf": "\u00e9" * 32})).status_code == 403  # not a 500
        r = await browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": after})
        assert r.status_code == 201


@pytest.mark.slow  # seconds of real time
async def test_the_login_token_expires_unused(tmp_path):
    settings = dashboard_settings(tmp_path, login_token_ttl=1.0)
    async with serving(settings, None) as link, httpx.AsyncClient(base_url=base_url(settings)) as browser:
        await asyncio.sleep(1.5)
        form = await browser.get(link)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        r = await browser.post("/login", data={"token": token_of(link), "csrf": csrf})
        assert r.status_code == 401 and "expired" in r.text


async def test_a_new_start_revokes_the_earlier_unused_login_token(tmp_path):
    settings = dashboard_settings(tmp_path)
    async with serving(settings, None) as first:
        pass
    second = on_new_port(settings)
    async with serving(second, None) as link, httpx.AsyncClient(base_url=base_url(second)) as browser:
        form = await browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        r = await browser.post("/login", data={"token": token_of(first), "csrf": csrf})
        assert r.status_code == 401
        await login(browser, token_of(link))
        cookie = browser.cookies[COOKIE]
    third = on_new_port(settings)
    async with serving(third, None):  # a used login token is not revoked: its session lives on
        assert (await replayed(third, cookie)).status_code == 200


async def test_an_actions_result_is_a_flash_shown_once_not_a_url(dev_env, worker_for, sandbox_factory):
    settings = settings_for(sandbox_factory(confirm_after=10**9), dev_env, portal_mode="manual")
    await worker_for(dev_env.client, settings)
    operator = issue_token(settings, "olga", "operator")
    try:
        async with serving(settings, dev_env.client, login=False), httpx.AsyncClient(base_url=base_url(settings)) as c:
            r = await c.post(
                "/api/domain-moves",
                json={"domain": DOMAIN, "legacy_mx": LEGACY},
                headers={"Authorization": f"Bearer {operator}"},
            )
            assert r.status_code == 201
            await until_stage(dev_env.client.get_workflow_handle(WID), "request_domain", "waiting")
            csrf = await login(c, operator)
            lure = await c.get(f"/migrations/{WID}", params={"result": "Session expired: log in at evil.example"})
            assert lure.status_code == 200 and "evil.example" not in lure.text and 'role="status"' not in lure.text
            r = await c.post(f"/migrations/{WID}/confirm", data={"stage": "request_domain", "csrf": csrf})
            assert r.status_code == 303 and r.headers["location"] == f"/migrations/{WID}"
            assert (await c.get(f"/migrations/{WID}?partial=true")).status_code == 200  # a refresh keeps it
            shown = await c.get(r.headers["location"])
            assert '<div class="box result" role="status">request_domain confirmed</div>' in shown.text
            assert 'role="status"' not in (await c.get(r.headers["location"])).text  # once
    finally:
        await terminate_running(dev_env.client, WID)


def test_the_lifetimes_are_durations_and_never_zero(tmp_path):
    config = tmp_path / "mailmove.toml"
    config.write_text('[dashboard]\nsession_idle = "30m"\nsession_absolute = "1d"\n')
    d = load_settings(config, environ={"MAILMOVE_DASHBOARD_LOGIN_TOKEN_TTL": "10m"}).dashboard
    assert (d.session_idle, d.session_absolute, d.login_token_ttl) == (1800, 86400, 600)
    config.write_text('[dashboard]\nlogin_token_ttl = "0s"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ={})
    assert refused.value.field == "dashboard.login_token_ttl"
