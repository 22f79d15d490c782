"""What a guard's Temporal Schedule holds and how often the dashboard asks for it, on dev servers:
a person's pause note stays out of the schedule (Temporal keeps its state in clear) and in the
guard's row, shown by `mailmove guard show` and the detail page; the detail's refresh every 2 s
shows the schedule as it was described lately, to whom may see the move; a schedule Temporal
cannot describe is "unavailable" on the page, never a 500.

The done move here runs in clear: with $MAILMOVE_RECORD_HISTORIES set, its history (the done path
that schedules the guard) is stored for tests/workflows/test_histories.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from mailmove.base import ids
from mailmove.base.config import Settings
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import Transition
from mailmove.base.payload_codec import data_converter
from mailmove.base.vocabulary import Action, Kind, MoveState, Stage
from mailmove.dashboard.app import create_app
from mailmove.dashboard.auth import issue_token
from mailmove.service import control
from mailmove.service.embedded import temporal_binary
from mailmove.store.db import sessions, upgrade
from mailmove.store.guards import add_guard
from mailmove.store.records import write_transition
from tests.support.domain_move import DOMAIN
from tests.support.fake_world import keep_history
from tests.support.guard import forget
from tests.support.local_dashboard import dashboard_settings
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

WID = f"domain-move:{DOMAIN}"
NOTE = "zone rework with the DNS team, ticket 4711, call Ines Beispiel at 06151 16-12345"


def as_(app: FastAPI, settings: Settings, role: str, *domains: str) -> httpx.AsyncClient:
    token = issue_token(settings, f"{role}-user", role, domains)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dash", headers={"Authorization": f"Bearer {token}"}
    )


async def test_a_pause_note_stays_out_of_the_schedule_and_the_refresh_asks_once_in_a_while(
    dev_env, worker_for, sandbox_factory
):
    world = sandbox_factory(confirm_after=1)
    settings = settings_for(world, dev_env, portal_mode="http", payload_keys=[])  # in clear, as histories/ are
    config = world.root / "mailmove.toml"
    client = Client(**{**dev_env.client.config(), "data_converter": data_converter(None)})
    schedule = client.get_schedule_handle(ids.guard_id(WID))
    await forget(client, schedule.id)
    await worker_for(client, settings)
    request = DomainMoveRequest(
        DOMAIN, f"mail.{DOMAIN}", actor="ines", no_external=True, contact=f"postmaster@{DOMAIN}"
    )
    handle = client.get_workflow_handle_for(
        DomainMoveWorkflow.run,
        await control.start_domain_move(client, settings, await control.prepare_domain_move(settings, request)),
    )
    assert (await handle.result()).state == "done"
    await keep_history(handle, "domain-move")
    try:
        code, out, err = await mailmove(config, "guard", "pause", DOMAIN, "--note", NOTE)
        assert code == 0, err
        described = await schedule.describe()
        assert described.schedule.state.paused
        assert described.schedule.state.note.endswith("(mailmove guard pause)")
        assert NOTE.encode() not in described.raw_description.SerializeToString()  # nowhere in the schedule
        assert b"4711" not in described.raw_description.SerializeToString()

        code, out, err = await mailmove(config, "guard", "show", DOMAIN, "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert shown["paused"] is True and shown["state"] == "paused" and NOTE in shown["note"]
        assert shown["note"].startswith("paused by ")

        app = create_app(settings, client)
        async with as_(app, settings, "viewer") as viewer, as_(app, settings, "viewer", "other.sandbox.test") as other:
            page = (await viewer.get(f"/migrations/{WID}")).text  # a page loaded: Temporal asked
            assert '<span id="guard-state">paused</span>' in page and NOTE in page

            code, out, err = await mailmove(config, "guard", "resume", DOMAIN)
            assert code == 0, err
            assert not (await schedule.describe()).schedule.state.paused
            refreshed = (await viewer.get(f"/migrations/{WID}", params={"partial": "true"})).text
            assert '<span id="guard-state">paused</span>' in refreshed  # as described lately: not asked again
            assert "resumed by " in refreshed  # the row is the store's, read each time
            hidden = await other.get(f"/migrations/{WID}", params={"partial": "true"})
            assert hidden.status_code == 404 and "guard-state" not in hidden.text  # what it said is not theirs

            page = (await viewer.get(f"/migrations/{WID}")).text
            assert '<span id="guard-state">active</span>' in page
    finally:
        await forget(client, schedule.id)


@pytest.mark.temporal
@pytest.mark.slow
async def test_a_schedule_temporal_cannot_describe_is_unavailable_on_the_page(tmp_path):
    """A dev server of its own with schedules disabled: asked for one, it refuses (PERMISSION_DENIED).
    The move is the store's (a done move whose history Temporal no longer holds), with its guard."""
    settings = dashboard_settings(tmp_path)
    upgrade(settings.database.url)
    now = datetime.now(UTC)
    done = Transition("done-1", 1, WID, Kind.DOMAIN, DOMAIN, now, Stage.DONE, MoveState.DONE, Action.DONE)
    with sessions(settings.database.url).begin() as session:
        write_transition(session, done)
        add_guard(session, WID, ids.guard_id(WID), Kind.DOMAIN, DOMAIN, {}, None, None, now)
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableSchedules=false"],
    ) as env:
        async with as_(create_app(settings, env.client), settings, "operator") as c:
            for params in ({}, {"partial": "true"}):
                r = await c.get(f"/migrations/{WID}", params=params)
                assert r.status_code == 200
                assert '<span id="guard-state">unavailable</span>' in r.text and "PERMISSION_DENIED" in r.text
                assert "Resume the guard" not in r.text and "Pause the guard" not in r.text
