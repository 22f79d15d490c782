"""The guard of a finished domain move on the dev server, against the sandbox's BIND and its SMTP
sink: the move's done path schedules it; the zone gets its old MX back (an RFC 2136 UPDATE by
the test) and one triggered run finds the drift, mails the contact once (a second run with the
same drift mails nothing), and the drift shows on the dashboard (the list's filter and badge,
the detail with the fix and the next run) and in /metrics; fixed, it clears. Pause and resume
through the CLI; `guard adopt` is idempotent and makes a schedule that is gone."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import Client, ScheduleHandle

from mailmove.base import ids
from mailmove.base.config import Settings
from mailmove.base.inputs import DomainMoveRequest
from mailmove.service import control, guard
from tests.support.dashboard import signed_in
from tests.support.domain_move import DOMAIN, FINAL, ORIGINAL, set_mx
from tests.support.guard import drift_mails, forget, row, run_once
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

WID = f"domain-move:{DOMAIN}"
CONTACT = f"postmaster@{DOMAIN}"


async def test_a_drift_is_found_mailed_once_shown_and_cleared(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=1)
    settings = settings_for(world, dev_env, portal_mode="http", notify=True)
    config = world.root / "mailmove.toml"
    await forget(dev_env.client, ids.guard_id(WID))
    await worker_for(dev_env.client, settings)
    request = DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="ines", contact=CONTACT)
    move = await control.prepare_domain_move(settings, request)
    handle = dev_env.client.get_workflow_handle_for(
        DomainMoveWorkflow.run, await control.start_domain_move(dev_env.client, settings, move)
    )
    assert (await handle.result()).state == "done"
    schedule = dev_env.client.get_schedule_handle(ids.guard_id(WID))
    try:
        described = await schedule.describe()  # made by the done path
        assert not described.schedule.state.paused and described.info.next_action_times
        assert (await asyncio.to_thread(row, settings, WID)).baseline is not None  # from the `done` report

        # the old MX comes back with a restored zone file
        await set_mx(settings, world, [*FINAL, *ORIGINAL], FINAL)
        guarded = await run_once(dev_env.client, schedule, settings)
        assert "mx.plan" in [c["id"] for c in guarded.drift] and guarded.fingerprint and guarded.drift_since
        [mail] = await wait_for(lambda: drift_mails(world, WID), what="the drift mail")
        assert mail["To"] == CONTACT and "since the move" in mail["Subject"]
        assert "the MX set" in mail.get_content() and "fix:" in mail.get_content()

        again = await run_once(dev_env.client, schedule, settings)  # the same drift: no second mail
        assert again.fingerprint == guarded.fingerprint and again.last_run_at > guarded.last_run_at
        await asyncio.sleep(0.5)
        assert len(drift_mails(world, WID)) == 1

        await shows_the_drift(settings, dev_env.client)

        await set_mx(settings, world, FINAL, [*FINAL, *ORIGINAL])  # fixed
        cleared = await run_once(dev_env.client, schedule, settings)
        assert (cleared.drift, cleared.fingerprint, cleared.mailed, cleared.drift_since) == ([], "", "", None)
        await shows_no_drift(settings, dev_env.client)
        assert len(drift_mails(world, WID)) == 1

        await pauses_and_resumes(config, schedule)
        await adopts(settings, dev_env.client, schedule)
    finally:
        await forget(dev_env.client, ids.guard_id(WID))


async def shows_the_drift(settings: Settings, client: Client) -> None:
    async with signed_in(settings, client, "viewer") as c:
        page = (await c.get("/?drift=true")).text
        assert f'href="/migrations/{WID}"' in page and f'href="/migrations/{WID}#guard"' in page  # the badge
        assert 'id="campus"' in page
        data = (await c.get("/api/migrations", params={"drift": "true"})).json()
        assert [r["id"] for r in data["rows"]] == [WID] and data["rows"][0]["drift"] >= 1 and data["drifting"] == 1
        detail = (await c.get(f"/migrations/{WID}")).text
        assert 'id="guard"' in detail and "mx.plan" in detail and "fix:" in detail and "next run" in detail
        shown = (await c.get(f"/api/guards/{WID}")).json()
        assert "mx.plan" in [d["id"] for d in shown["drift"]] and shown["paused"] is False and shown["next_run"]
        assert (await c.post(f"/api/guards/{WID}/run")).status_code == 403  # a viewer may not
        metrics = (await c.get("/metrics")).text
    assert 'mailmove_drift{check="mx.plan",kind="domain"} 1.0' in metrics
    assert 'mailmove_campus_domains{class="drifting"} 1.0' in metrics
    assert 'mailmove_campus_domains{class="behind"} 1.0' in metrics  # before any survey: the moved domains


async def shows_no_drift(settings: Settings, client: Client) -> None:
    async with signed_in(settings, client, "viewer") as c:
        data = (await c.get("/api/migrations", params={"drift": "true"})).json()
        assert data["rows"] == [] and data["drifting"] == 0
        assert "No drift" in (await c.get(f"/migrations/{WID}")).text
        metrics = (await c.get("/metrics")).text
    assert "mailmove_drift{" not in metrics and 'mailmove_campus_domains{class="drifting"} 0.0' in metrics


async def pauses_and_resumes(config, schedule: ScheduleHandle) -> None:
    code, out, err = await mailmove(config, "guard", "pause", DOMAIN, "--note", "zone work", "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == f"{schedule.id} paused"
    state = (await schedule.describe()).schedule.state
    assert state.paused and "zone work" not in state.note  # the note is the guard's row's (test_guard_schedule)
    code, out, err = await mailmove(config, "guard", "show", DOMAIN, "--json")
    assert code == 0 and json.loads(out)["paused"] is True and json.loads(out)["next_run"] is None
    assert "zone work" in json.loads(out)["note"]
    code, out, err = await mailmove(config, "guard", "resume", DOMAIN)
    assert code == 0, err
    assert not (await schedule.describe()).schedule.state.paused
    code, out, err = await mailmove(config, "guard", "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [WID]


async def adopts(settings: Settings, client: Client, schedule: ScheduleHandle) -> None:
    first = await guard.adopt(client, settings)
    assert first == [{"id": WID, "schedule_id": schedule.id, "outcome": "kept"}]
    assert await guard.adopt(client, settings) == first
    await schedule.delete()  # a move done before guards existed: no schedule
    made = await guard.adopt(client, settings)
    assert made == [{"id": WID, "schedule_id": schedule.id, "outcome": "made"}]
    action = (await schedule.describe()).schedule.action
    assert (action.workflow, action.task_queue) == ("GuardWorkflow", settings.temporal.task_queue)
