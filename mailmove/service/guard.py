"""The guards of finished moves, as the CLI and the dashboard both see and drive them: the list
(from the store), one guard (the store and its Temporal Schedule), a run now, pause and resume,
`adopt` for moves done before guards existed; and the campus summary of the front page and
/metrics (the last survey, the moves, the guards).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from temporalio.client import Client, ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.guard import GuardActivities
from mailmove.base import ids
from mailmove.base.config import Settings
from mailmove.base.errors import NotFound
from mailmove.base.guard import GuardInput, domain_guard, server_guard, stored_guard
from mailmove.base.inputs import NOTE_LIMIT, text_field
from mailmove.base.model import DomainMoveInput, ServerMoveInput
from mailmove.base.report import Check
from mailmove.base.vocabulary import ENDED, MOVE_KINDS, Kind, MoveState
from mailmove.service.control import jsonable
from mailmove.service.survey import last_survey_counts
from mailmove.store.db import ready
from mailmove.store.guards import drift_of, guard_rows, note_guard
from mailmove.store.models import Guard
from mailmove.store.models import Migration as StoredMigration
from mailmove.store.records import aware

CAMPUS = ("behind", "moving", "not_yet", "drifting")  # the front page's four, in this order


def guard_row(row: Guard) -> dict[str, Any]:
    """A guard as `guard list --json` and the API list it."""
    return {
        "id": row.workflow_id,
        "schedule_id": row.schedule_id,
        "kind": row.kind,
        "subject": row.subject,
        "drift": [c.id for c in drift_of(row)],
        "drift_since": row.drift_since and aware(row.drift_since),
        "last_run_at": row.last_run_at and aware(row.last_run_at),
    }


def guards(settings: Settings) -> list[dict[str, Any]]:
    with ready(settings.database.url)() as session:
        return [guard_row(row) for row in guard_rows(session)]


SCHEDULE_TTL = 30.0  # seconds the dashboard's detail refresh (every 2 s) reuses what a schedule said
SCHEDULE_WAIT = timedelta(seconds=5)  # for Temporal to describe a schedule; longer: unavailable


@dataclass
class Described:
    """What Temporal says of a guard's schedule. `state`: active, paused, `no schedule` (Temporal
    holds none: `guard adopt` makes it) or unavailable (Temporal could not tell: `reason` says why)."""

    state: str
    reason: str = ""
    next_run: datetime | None = None
    recent: list[datetime] = field(default_factory=list)  # when the last runs started

    @property
    def paused(self) -> bool | None:
        return {"active": False, "paused": True}.get(self.state)


async def describe(client: Client, wid: str) -> Described:
    """The schedule of the move's guard as Temporal describes it; any failure to ask is `unavailable`."""
    handle = _schedule(client, wid)
    try:
        described = await handle.describe(rpc_timeout=SCHEDULE_WAIT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return Described("no schedule", f"Temporal holds no schedule {handle.id}: `mailmove guard adopt`")
        return Described("unavailable", f"Temporal did not describe {handle.id} ({exc.status.name}): {exc.message}")
    state = described.schedule.state
    upcoming = [] if state.paused else list(described.info.next_action_times[:1])
    recent = [a.started_at for a in described.info.recent_actions]
    return Described("paused" if state.paused else "active", "", upcoming[0] if upcoming else None, recent)


class Schedules:
    """What the guards' schedules said lately, per move, for `ttl` seconds: the dashboard's detail
    page, refreshed every 2 s, asks Temporal again only when that has passed (a page loaded, as
    after a pause on it, asks at once). It keeps Temporal's answers and decides nothing: who may
    see a move is checked before it is asked."""

    def __init__(self, ttl: float = SCHEDULE_TTL):
        self.ttl = ttl
        self.said: dict[str, tuple[float, Described]] = {}

    async def describe(self, client: Client, wid: str, fresh: bool = True) -> Described:
        """Temporal asked now (`fresh`), or within the last `ttl` seconds."""
        now = time.monotonic()
        kept = self.said.get(wid)
        if not fresh and kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        described = await describe(client, wid)
        self.said = {k: v for k, v in self.said.items() if now - v[0] < self.ttl} | {wid: (now, described)}
        return described


@dataclass
class GuardView:
    """One guard: its row, what its schedule says, and the last pause or resume (who, when, and
    their note: the store's, never the schedule's)."""

    row: dict[str, Any]
    drift: list[Check]
    schedule: Described
    note: str = ""

    @property
    def paused(self) -> bool | None:
        return self.schedule.paused

    def json(self) -> dict[str, Any]:
        s = self.schedule
        return jsonable({**self.row, "drift": self.drift, "state": s.state, "reason": s.reason,
                         "paused": s.paused, "note": self.note, "next_run": s.next_run, "recent": s.recent})  # fmt: skip


def _row(settings: Settings, wid: str) -> tuple[dict[str, Any], list[Check], str]:
    with ready(settings.database.url)() as session:
        row = session.get(Guard, wid)
        if row is None:
            raise NotFound("id", f"{wid} has no guard (a move gets one when it is done; `mailmove guard adopt`)")
        return guard_row(row), drift_of(row), row.note


def _schedule(client: Client, wid: str) -> ScheduleHandle:
    return client.get_schedule_handle(ids.guard_id(wid))


async def show_guard(
    client: Client, settings: Settings, wid: str, schedules: Schedules | None = None, fresh: bool = True
) -> GuardView:
    """The guard's row, and its schedule asked of Temporal (of `schedules`, if not `fresh`, as
    said lately)."""
    row, drift, note = await asyncio.to_thread(_row, settings, wid)
    described = await (schedules.describe(client, wid, fresh) if schedules else describe(client, wid))
    return GuardView(row, drift, described, note)


def _noted(settings: Settings, wid: str, said: str) -> None:
    with ready(settings.database.url).begin() as session:
        note_guard(session, wid, said)


async def _act(client: Client, settings: Settings, wid: str, act: str, actor: str, note: str) -> str:
    """A run, pause or resume. The schedule's own note (Temporal's, in clear) is a fixed text: who
    and what; a person's note is kept in the guard's row."""
    await asyncio.to_thread(_row, settings, wid)  # a NotFound for a move without a guard
    handle = _schedule(client, wid)
    note = text_field("note", note, NOTE_LIMIT)
    fixed = f"{act}d by {actor} (mailmove guard {act})"  # for pause and resume
    try:
        if act == "run":
            await handle.trigger()
        elif act == "pause":
            await handle.pause(note=fixed)
        else:
            await handle.unpause(note=fixed)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound("id", f"Temporal holds no schedule {handle.id}: `mailmove guard adopt` makes it") from None
        raise
    if act != "run":
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        await asyncio.to_thread(_noted, settings, wid, f"{act}d by {actor} at {at}" + (f": {note}" if note else ""))
    return {"run": f"{handle.id}: a run starts now", "pause": f"{handle.id} paused", "resume": f"{handle.id} resumed"}[
        act
    ]


async def run_guard(client: Client, settings: Settings, wid: str, actor: str) -> str:
    """A run now (a run still going: skipped, as the schedule's own)."""
    return await _act(client, settings, wid, "run", actor, "")


async def pause_guard(client: Client, settings: Settings, wid: str, actor: str, note: str = "") -> str:
    return await _act(client, settings, wid, "pause", actor, note)


async def resume_guard(client: Client, settings: Settings, wid: str, actor: str, note: str = "") -> str:
    return await _act(client, settings, wid, "resume", actor, note)


def _done_moves(settings: Settings) -> list[tuple[str, str, str]]:
    with ready(settings.database.url)() as session:
        query = select(StoredMigration.workflow_id, StoredMigration.kind, StoredMigration.subject).where(
            StoredMigration.state == MoveState.DONE, StoredMigration.kind.in_(MOVE_KINDS)
        )
        return [tuple(r) for r in session.execute(query.order_by(StoredMigration.subject))]


async def _guard_of(client: Client, settings: Settings, wid: str, kind: str, subject: str) -> GuardInput:
    """From the move's own input, as its history holds it; else from this configuration."""
    wanted = DomainMoveInput if kind == Kind.DOMAIN else ServerMoveInput
    try:
        async for event in client.get_workflow_handle(wid).fetch_history_events():
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [move] = await client.data_converter.decode(payloads, [wanted])
            return domain_guard(wid, move) if kind == Kind.DOMAIN else server_guard(wid, move)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    return stored_guard(wid, kind, subject, settings.timing)


async def adopt(client: Client, settings: Settings) -> list[dict[str, str]]:
    """A guard for every move done, made unless it exists (idempotent): (id, "made" or "kept")."""
    activities = GuardActivities(settings, client)
    answers = []
    for wid, kind, subject in await asyncio.to_thread(_done_moves, settings):
        try:
            await _schedule(client, wid).describe()
            outcome = "kept"
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            outcome = "made"
        await activities.ensure_schedule(await _guard_of(client, settings, wid, kind, subject))
        answers.append({"id": wid, "schedule_id": ids.guard_id(wid), "outcome": outcome})
    return answers


def campus(settings: Settings) -> dict[str, int | None]:
    """How many domains are behind the gateway, moving, not yet, drifting; then the survey's other
    classes. `behind` and `not_yet` are the last survey's (before one: the domains moved by mailmove,
    and None); `moving` and `drifting` are the moves' and the guards' now."""
    surveyed = last_survey_counts(settings)
    with ready(settings.database.url)() as session:
        domains = select(func.count()).select_from(StoredMigration).where(StoredMigration.kind == Kind.DOMAIN)
        moving = session.scalar(domains.where(StoredMigration.state.not_in(ENDED)))
        done = session.scalar(domains.where(StoredMigration.state == MoveState.DONE))
        drifting = session.scalar(
            select(func.count()).select_from(Guard).where(Guard.kind == Kind.DOMAIN, Guard.fingerprint != "")
        )
    counts = {str(k): v for k, v in surveyed.items()}
    summary = {
        "behind": counts.pop("behind", done),
        "moving": moving or 0,
        "not_yet": counts.pop("not_yet", None),
        "drifting": drifting or 0,
    }
    return summary | counts
