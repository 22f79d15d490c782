"""The store on SQLite and on PostgreSQL: Alembic schema, idempotent audit writes, the read
model's order, and the portal request recorded before and after it is sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditActivities
from activities.portal import PortalActivities
from mailmove.base.config import PortalConfig
from mailmove.base.model import PortalFiling, Transition
from mailmove.store.db import engine, sessions, upgrade
from mailmove.store.records import audit_trail, list_migrations, portal_requests

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("postgres_url")


def transition(n: int, wid: str = "domain-move:a.example.org", **kw) -> Transition:
    values = dict(
        event_id=f"{wid}-{n}",
        seq=n,
        workflow_id=wid,
        kind="domain",
        subject=wid.split(":")[1],
        at=T0 + timedelta(minutes=n),
        stage="preflight",
        state="running",
        action=f"step {n}",
    )
    return Transition(**(values | kw))


def test_schema_comes_from_alembic_and_upgrade_is_idempotent(database_url):
    upgrade(database_url)
    upgrade(database_url)
    tables = set(inspect(engine(database_url)).get_table_names())
    assert {"migrations", "audit_events", "portal_requests", "alembic_version"} <= tables


async def test_transitions_are_written_once_and_read_in_order(database_url):
    upgrade(database_url)
    audit = AuditActivities(database_url)
    env = ActivityEnvironment()
    assert await env.run(audit.record_transition, transition(1))
    assert await env.run(audit.record_transition, transition(2, stage="add_gateway_mx", actor="alice"))
    assert not await env.run(audit.record_transition, transition(2, stage="add_gateway_mx"))  # a retried write
    await env.run(audit.record_transition, transition(1, "domain-move:b.example.org", event_id="b-1"))
    with sessions(database_url)() as session:
        trail = audit_trail(session, "domain-move:a.example.org")
        assert [(e.seq, e.actor, e.stage) for e in trail] == [
            (1, "mailmove", "preflight"),
            (2, "alice", "add_gateway_mx"),
        ]
        rows = list_migrations(session)
        assert [m.workflow_id for m in rows] == ["domain-move:a.example.org", "domain-move:b.example.org"]
        assert rows[0].stage == "add_gateway_mx"
        assert [m.workflow_id for m in list_migrations(session, kind="server")] == []


async def test_an_older_transition_does_not_overwrite_a_newer_state(database_url):
    upgrade(database_url)
    audit = AuditActivities(database_url)
    env = ActivityEnvironment()
    await env.run(audit.record_transition, transition(5, stage="done", state="done"))
    await env.run(audit.record_transition, transition(4, stage="await_propagation", state="waiting"))
    with sessions(database_url)() as session:
        (row,) = list_migrations(session)
        assert (row.stage, row.state) == ("done", "done")


async def test_portal_request_is_recorded_before_and_after(database_url, sandbox_factory):
    upgrade(database_url)
    world = sandbox_factory(confirm_after=0)
    portal = PortalActivities(PortalConfig(mode="http", url=world.portal.url), database_url)
    filing = PortalFiling("key-1", "domain-move:a.example.org", "domain", "a.example.org", {"domain": "a.example.org"})
    env = ActivityEnvironment()
    first = await env.run(portal.file_request, filing)
    again = await env.run(portal.file_request, filing)  # answered from the database, not sent again
    assert first == again and first.reference == "R00001"
    assert len(world.registry.requests) == 1
    assert await env.run(portal.request_status, first) == "confirmed"
    with sessions(database_url)() as session:
        [row] = portal_requests(session, "domain-move:a.example.org")
        assert (row.state, row.reference, row.values) == ("filed", "R00001", {"domain": "a.example.org"})
        assert row.filed_at is not None
