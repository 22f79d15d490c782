"""The dashboard's answers carry the headers that keep a browser from being turned against it,
and Chromium obeys them on the real pages: no inline or injected script runs, no other site
frames the dashboard, htmx still refreshes. /docs (a public CDN's code) is off; /metrics needs
a token of someone who sees every domain."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import async_playwright

from mailmove.dashboard.auth import issue_token
from mailmove.dashboard.headers import CSP
from mailmove.dashboard.serve import serving
from tests.support.browser import CHROMIUM, FLAGS
from tests.support.settings import settings_for

WATCH_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.violations.push(e.violatedDirective));
"""


@pytest.fixture
async def dashboard(dev_env, sandbox_factory):
    settings = settings_for(sandbox_factory(), dev_env)
    async with serving(settings, dev_env.client) as login:
        yield settings, login, login.split("/login")[0]


async def test_every_answer_has_the_headers(dashboard):
    settings, login, base = dashboard
    viewer = issue_token(settings, "v", "viewer")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {viewer}"}) as c:
        for path in ("/login", "/", "/api/migrations", "/static/mailmove.css", "/healthz", "/nowhere", "/openapi.json"):
            r = await c.get(path)
            assert r.headers["content-security-policy"] == CSP, path
            assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP and "frame-ancestors 'none'" in CSP
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/redoc")).status_code == 404


async def test_metrics_need_a_token_that_sees_every_domain(dashboard):
    settings, login, base = dashboard
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.get("/metrics")).status_code == 401
        limited = issue_token(settings, "eve", "operator", ("other.sandbox.test",))
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {limited}"})
        assert r.status_code == 403 and r.json()["field"] == "role"
        viewer = issue_token(settings, "prometheus", "viewer")
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 200 and "mailmove_migrations" in r.text


async def test_chromium_runs_no_injected_script_and_refuses_framing(dashboard):
    settings, login, base = dashboard
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = await browser.new_page()
            await page.add_init_script(WATCH_VIOLATIONS)
            refreshes = []
            page.on("request", lambda r: refreshes.append(r.url) if "partial=true" in r.url else None)
            await page.goto(login)
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_url(base + "/")
            await page.wait_for_timeout(3500)  # the list refreshes every 3 s: htmx works under the CSP
            assert refreshes, "htmx made no refresh request"
            assert await page.evaluate("window.violations") == [], "the dashboard's own pages break its CSP"

            # what an injected <script> would do (an escaping bug, say) is refused by the policy
            await page.evaluate(
                """() => { const s = document.createElement("script");
                           s.textContent = "window.pwned = true"; document.body.append(s); }"""
            )
            await page.wait_for_timeout(200)
            assert await page.evaluate("window.pwned") is None
            assert "script-src-elem" in await page.evaluate("window.violations")

            # another site framing the dashboard (clickjacking) gets an error page, not the dashboard
            attacker = await browser.new_page()
            await attacker.set_content(f'<iframe id="f" src="{base}/login" width="600" height="400"></iframe>')
            await attacker.wait_for_timeout(1000)
            frame = next(f for f in attacker.frames if f != attacker.main_frame)
            assert "Log in" not in await frame.content()
        finally:
            await browser.close()
