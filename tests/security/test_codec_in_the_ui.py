"""Temporal UI shows a move's payloads decoded through the dashboard's codec endpoint, to
someone signed in to the dashboard, and only to them: `mailmove up` as a process of its own
(embedded dev server started with `--ui-codec-endpoint`), a domain move with a Whitelist in
the sandbox, Debian's Chromium on the embedded UI."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
from playwright.async_api import Page

from mailmove.base.config import load_settings
from mailmove.service.embedded import codec_endpoint, temporal_binary
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.processes import mailmove_sync, move_done, start_up

DOMAIN = "chem.sandbox.test"
ALICE = "zz-alice-4711"
ARTIFACTS = ROOT / "tests" / "artifacts"


async def shows(page: Page, text: str, seconds: float) -> bool:
    """Whether the page comes to hold `text` within `seconds` (the UI decodes after it renders)."""
    for _ in range(int(seconds * 2)):
        if text in await page.content():
            return True
        await page.wait_for_timeout(500)
    return False


async def use_the_codec(page: Page, ui: str, endpoint: str) -> None:
    """What a user ticks in the UI's codec settings: this endpoint, with the browser's cookies."""
    await page.goto(f"{ui}/")
    await page.evaluate(
        """([endpoint]) => {
            localStorage.setItem('endpoint', JSON.stringify(endpoint));
            localStorage.setItem('includeCredentials', 'true');
            localStorage.setItem('overrideRemoteCodecConfiguration', 'true');
        }""",
        [endpoint],
    )


@pytest.mark.temporal  # `mailmove up` starts its own
async def test_the_embedded_ui_decodes_for_the_signed_in_only(sandbox_factory, browser, tmp_path):
    world = sandbox_factory(confirm_after=1)
    config = world.write_config(portal_mode="http")
    settings = load_settings(config)
    addresses = tmp_path / "addresses"
    addresses.write_text(f"{ALICE}@{DOMAIN}\n")
    stack = await start_up(config)
    try:
        log = (config.parent / "up.log").read_text()
        login = re.search(r"one-time login \(admin\): (\S+)", log).group(1)
        mailmove_sync(config, "domain", "start", DOMAIN, "--legacy-mx", f"mail.{DOMAIN}", "--addresses", str(addresses))
        await wait_for(lambda: move_done(config), timeout=90, what="the move to be done")

        listen = settings.temporal.embedded_listen
        raw = subprocess.run(
            [temporal_binary(), "workflow", "show", "-w", f"domain-move:{DOMAIN}", "--address", str(listen), "-o", "json"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert ALICE not in raw and json.loads(raw)["events"]

        ui = f"http://{listen.host}:{settings.temporal.embedded_ui_port}"
        move = f"{ui}/namespaces/default/workflows/domain-move:{DOMAIN}"

        stranger = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await use_the_codec(stranger, ui, codec_endpoint(settings))
        await stranger.goto(move)
        assert not await shows(stranger, ALICE, 8)  # not signed in: the codec answers 401

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(login)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(re.compile(r".*/$"))
        await use_the_codec(page, ui, codec_endpoint(settings))
        await page.goto(move)
        assert await shows(page, ALICE, 30), "the UI did not show the decoded address"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "temporal-ui-decoded.png", full_page=True)
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(30)
