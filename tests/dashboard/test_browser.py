"""The dashboard in Debian's Chromium, driven by Playwright (never `playwright install`), against
a dashboard the test serves on the dev server: log in with the one-time token, start a domain
move from the form, watch the stage advance, confirm the waiting stage with its button, see
the audit entry. Then the guard's parts, on state made for real: a move done whose guard found
drift, another still moving, a survey stored by `mailmove survey`; the front page's campus box
counts them, the list's drift filter and badge find the drifting move, its detail shows the
guard's next run and the finding with its fix. Screenshots go to `tests/artifacts/`."""

from __future__ import annotations

import json
import re

from playwright.async_api import expect

from mailmove.base import ids
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.vocabulary import Kind, MoveState
from mailmove.dashboard.serve import serving
from mailmove.service import control
from tests.support.domain_move import FINAL, ORIGINAL, set_mx
from tests.support.guard import forget, run_once
from tests.support.moves import terminate_running, until_stage
from tests.support.paths import ROOT
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

ARTIFACTS = ROOT / "tests" / "artifacts"
DOMAIN = "chem.sandbox.test"


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


CAMPUS = (DOMAIN, "phys.sandbox.test", "bio.sandbox.test", "math.sandbox.test")  # chem and phys move


async def test_the_campus_the_drift_filter_and_badge_and_the_guard(dev_env, worker_for, sandbox_factory, browser):
    world = sandbox_factory(confirm_after=1, domains=CAMPUS)
    settings = settings_for(world, dev_env, portal_mode="http")
    config = world.root / "mailmove.toml"
    wid, moving = ids.workflow_id(Kind.DOMAIN, DOMAIN), ids.workflow_id(Kind.DOMAIN, CAMPUS[1])
    await forget(dev_env.client, ids.guard_id(wid))
    await worker_for(dev_env.client, settings)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        request = DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="ines")
        handle = dev_env.client.get_workflow_handle_for(
            DomainMoveWorkflow.run,
            await control.start_domain_move(
                dev_env.client, settings, await control.prepare_domain_move(settings, request)
            ),
        )
        assert (await handle.result()).state == MoveState.DONE
        # phys moves too, and waits for its filing (by hand) meanwhile
        request = DomainMoveRequest(CAMPUS[1], f"mail.{CAMPUS[1]}", portal_mode="manual", actor="ines")
        other = dev_env.client.get_workflow_handle_for(
            DomainMoveWorkflow.run,
            await control.start_domain_move(
                dev_env.client, settings, await control.prepare_domain_move(settings, request)
            ),
        )
        await until_stage(other, "request_domain", "waiting")

        # the survey: chem behind the gateway, phys partly (its move added the gateway hosts), two not yet
        domains = world.root / "domains.txt"
        domains.write_text("".join(f"{d}\n" for d in CAMPUS))
        code, out, err = await mailmove(config, "survey", str(domains), "--json")
        assert code == 0, err
        surveyed = {d["domain"]: (d["class"], d["reason"]) for d in json.loads(out)["domains"]}
        assert [surveyed[d][0] for d in CAMPUS] == ["behind", "partly", "not_yet", "not_yet"], surveyed

        # the old MX comes back with a restored zone file; the guard's run finds it
        await set_mx(settings, world, [*FINAL, *ORIGINAL], FINAL)
        guard = await run_once(dev_env.client, dev_env.client.get_schedule_handle(ids.guard_id(wid)), settings)
        assert [c["id"] for c in guard.drift] == ["mx.plan"]

        async with serving(settings, dev_env.client) as login:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(login)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Migrations")).to_be_visible()

            campus = page.get_by_role("region", name="campus")
            for name, count in (("behind", 1), ("moving", 1), ("not_yet", 2), ("drifting", 1)):
                await expect(campus.locator(f".tile.{name}")).to_have_text(f"{count} {name.replace('_', ' ')}")
            partly = campus.locator(".tile.minor", has_text="partly")  # one of the survey's other classes
            await expect(partly).to_have_text("1 partly")
            await expect(campus).not_to_contain_text("no survey yet")
            table = page.locator("#table")
            await expect(table.get_by_role("link", name=CAMPUS[1], exact=True)).to_be_visible()
            chem = table.get_by_role("row").filter(has=page.get_by_role("link", name=DOMAIN, exact=True))
            await expect(chem.get_by_role("link", name="drift 1", exact=True)).to_be_visible()
            await expect(table.get_by_role("link", name=re.compile(r"^drift \d+$"))).to_have_count(1)  # chem's alone
            await page.screenshot(path=ARTIFACTS / "campus.png", full_page=True)

            await page.get_by_role("checkbox", name="drift").check()
            await page.get_by_role("button", name="Filter").click()
            await expect(page).to_have_url(re.compile(r"[?&]drift=true"))
            await expect(table.get_by_role("link", name=DOMAIN, exact=True)).to_be_visible()
            await expect(table.get_by_role("link", name=CAMPUS[1], exact=True)).to_have_count(0)
            await page.wait_for_timeout(3500)  # a refresh of the table keeps the filter
            await expect(table.get_by_role("link", name=CAMPUS[1], exact=True)).to_have_count(0)
            await expect(table.get_by_role("link", name=DOMAIN, exact=True)).to_be_visible()

            await table.get_by_role("link", name="drift 1", exact=True).click()
            await expect(page).to_have_url(re.compile(f"/migrations/{re.escape(wid)}#guard$"))
            await expect(page.get_by_role("heading", name="Guard drift 1")).to_be_visible()
            await expect(page.locator("#guard + p")).to_contain_text(
                re.compile(r"next run \d{4}-\d\d-\d\d \d\d:\d\d UTC")
            )
            finding = page.locator("#drift tbody tr")
            await expect(finding).to_have_count(1)
            await expect(finding).to_contain_text("mx.plan")
            await expect(finding).to_contain_text(f"seen: {ORIGINAL[0]}")  # the old MX back
            gateway = ", ".join(map(str, FINAL))
            await expect(finding.locator("code")).to_have_text(
                f"set exactly the gateway MX records ({gateway}) and nothing else"
            )
            await page.screenshot(path=ARTIFACTS / "guard.png", full_page=True)
    finally:
        await terminate_running(dev_env.client, moving)
        await forget(dev_env.client, ids.guard_id(wid))
    assert (ARTIFACTS / "campus.png").stat().st_size > 10_000 and (ARTIFACTS / "guard.png").stat().st_size > 10_000
