"""The dashboard in Debian's Chromium, driven by Playwright (never `playwright install`), against
a dashboard the test serves on the dev server: log in with the one-time token, start a domain
move from the form, watch the stage advance, confirm the waiting stage with its button, see
the audit entry. Screenshots of the list and the detail page go to `artifacts/`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from dashboard.serve import serving
from tests.conftest import ROOT, settings_for, terminate_running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
# as root and on a closed network: no sandbox, no background connections (DESIGN's notes)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
DOMAIN = "chem.sandbox.test"


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/setup installs it)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()


async def test_start_watch_confirm_and_the_audit(dev_env, worker_for, sandbox_factory, browser):
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    await worker_for(dev_env.client, settings)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        async with serving(settings, dev_env.client) as login:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(login)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Migrations")).to_be_visible()

            await page.get_by_role("link", name="Start a move").click()
            await page.get_by_label("Domain", exact=True).fill(DOMAIN)
            await page.get_by_label("Legacy mail server").fill(f"mail.{DOMAIN}")
            await page.get_by_label("Portal").select_option("manual")
            await page.get_by_role("button", name="Start the domain move").click()
            await expect(page.get_by_role("status")).to_have_text("started")

            # htmx refreshes the detail in place: the move advances to the waiting stage
            confirm = page.get_by_role("button", name="Confirm request_domain")
            await expect(confirm).to_be_visible(timeout=30_000)
            await expect(page.locator("#detail")).to_contain_text("antrag-maildomain.php")
            await page.screenshot(path=ARTIFACTS / "detail.png", full_page=True)

            await page.get_by_label("Note").fill("filed in the browser")
            await page.wait_for_timeout(4500)  # two refresh periods: typing is not wiped by a swap
            await expect(page.get_by_label("Note")).to_have_value("filed in the browser")
            await confirm.click()
            await expect(page.get_by_role("status")).to_have_text("request_domain confirmed")
            history = page.locator("#history")
            await expect(history).to_contain_text("filed in the browser")
            entry = history.locator("tr", has_text="request_domain confirmed")
            await expect(entry).to_contain_text("admin (one-time login token)")
            await expect(entry).to_contain_text("filed in the browser")
            await expect(page.locator("#detail")).to_contain_text("await_registration", timeout=30_000)

            await page.goto(login.split("/login")[0] + "/")
            await expect(page.get_by_role("link", name=DOMAIN)).to_be_visible()
            await page.screenshot(path=ARTIFACTS / "list.png", full_page=True)
    finally:
        await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")
    assert (ARTIFACTS / "list.png").stat().st_size > 10_000 and (ARTIFACTS / "detail.png").stat().st_size > 10_000
