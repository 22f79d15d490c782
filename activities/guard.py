"""The guard of a finished move: its Temporal Schedule made (idempotent), each run's report judged
against the move's `done` report, and the drift recorded for the dashboard and the mail.

`ensure_schedule` is what a move's done path and `mailmove guard adopt` both call: an existing
schedule is left as it is (its interval, its pause), and the guard's row, with the baseline taken
from the `done` report in the store, is made once.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.converter import value_to_type
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import beating
from mailmove.base import hints, ids
from mailmove.base.config import Settings
from mailmove.base.guard import GUARD_WORKFLOW, GuardInput, GuardMailed, GuardRun, GuardVerdict
from mailmove.base.model import Notice
from mailmove.base.report import Check
from mailmove.base.vocabulary import Event
from mailmove.checks.drift import drift, findings, fingerprint
from mailmove.store.db import sessions
from mailmove.store.guards import add_guard, done_report, mark_mailed, record_drift
from mailmove.store.models import Guard
from mailmove.store.records import aware, save_report

GUARD_STAGE = "guard"  # the stage its latest report is stored under, beside `preflight` and `done`


def schedule_of(settings: Settings, guard: GuardInput) -> Schedule:
    """Every `guard.interval` with up to `guard.jitter` more; a run still going when the next is due:
    skipped. A run takes no argument: what it checks is the guard's row (`guard_input`). A run ends
    within half the interval whatever happens (a worker that does not know the workflow, an
    activity retried until its bound), so one stuck run never makes the schedule skip the rest."""
    g = settings.guard
    return Schedule(
        action=ScheduleActionStartWorkflow(
            GUARD_WORKFLOW,
            id=ids.guard_id(guard.workflow_id),
            task_queue=settings.temporal.task_queue,
            execution_timeout=timedelta(seconds=g.interval / 2),
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=g.interval))], jitter=timedelta(seconds=g.jitter)
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=f"guards {guard.workflow_id} (mailmove)"),
    )


def drift_notice(row: Guard, drifting: list[Check], contact: str) -> Notice:
    """The mail of one drift; its key (and Message-ID) names the drift, so a retry sends it once."""
    since = aware(row.drift_since).astimezone(UTC).strftime("%Y%m%dT%H%M%S")  # one key, whatever the store's zone
    key = hashlib.sha256(f"{row.workflow_id}\n{row.fingerprint}\n{since}".encode()).hexdigest()
    lines = [f"- {c.summary}" + (f"\n  fix: {c.fix}" if c.fix else "") for c in drifting]
    body = (
        f"The guard of {row.subject} found what was not there when its move was done:\n\n"
        + "\n".join(lines)
        + f"\n\nShow it: {hints.guard('show', row.workflow_id)}\n"
        f"Check again after the fix: {hints.guard('run', row.workflow_id)}\n"
        "You are mailed again only when the drift changes.\n"
    )
    subject = f"[mailmove] {row.subject}: {len(drifting)} finding(s) since the move"
    return Notice(key, row.workflow_id, Event.DRIFT, contact, subject, body)


class GuardActivities:
    def __init__(self, settings: Settings, client: Client | None = None):
        """`client`: when called directly (`guard adopt`); a worker's activity uses the worker's."""
        self.settings = settings
        self.client = client
        self.sessions = sessions(settings.database.url)

    def _add(self, guard: GuardInput, schedule_id: str) -> None:
        with self.sessions.begin() as session:
            report = done_report(session, guard.workflow_id)
            baseline = None if report is None else findings(report)
            done_at = None if report is None else datetime.fromisoformat(report.checked_at)
            now = datetime.now(UTC)
            add_guard(
                session, guard.workflow_id, schedule_id, guard.kind, guard.subject, asdict(guard), baseline, done_at,
                now,
            )  # fmt: skip

    @activity.defn
    @beating
    async def ensure_schedule(self, guard: GuardInput) -> str:
        """The guard's schedule id; made unless it exists (its times and a pause stay). What its
        runs check is brought up to `guard` (a subject moved again: begun anew)."""
        client = self.client or activity.client()
        schedule_id = ids.guard_id(guard.workflow_id)
        try:
            await client.create_schedule(schedule_id, schedule_of(self.settings, guard))
        except ScheduleAlreadyRunningError:
            pass
        except RPCError as exc:  # a server without schedules (the time-skipping test server) will not have them later
            if exc.status == RPCStatusCode.UNIMPLEMENTED:
                raise ApplicationError(f"this Temporal server has no schedules: {exc}", non_retryable=True) from exc
            raise
        await asyncio.to_thread(self._add, guard, schedule_id)
        return schedule_id

    def _input(self, move_id: str) -> GuardInput | None:
        with self.sessions() as session:
            row = session.get(Guard, move_id)
            return None if row is None else value_to_type(GuardInput, row.input)

    @activity.defn
    async def guard_input(self, move_id: str) -> GuardInput:
        """What a run of the move's guard checks, with this worker's `guard.agent_wait`."""
        guard = await asyncio.to_thread(self._input, move_id)
        if guard is None:
            raise ApplicationError(f"{move_id} has no guard: `mailmove guard adopt` makes it", non_retryable=True)
        return replace(guard, agent_wait=self.settings.guard.agent_wait)

    def _assess(self, run: GuardRun) -> GuardVerdict:
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            save_report(session, run.workflow_id, GUARD_STAGE, run.report)
            row = session.get(Guard, run.workflow_id)
            if row.baseline is None:  # no `done` report to compare with: this first run is the baseline
                row.baseline = findings(run.report)
            drifting = drift(row.baseline, run.report)
            record_drift(session, row, drifting, fingerprint(drifting), now)
            notice = None
            if row.fingerprint and row.fingerprint != row.mailed and run.contact:
                notice = drift_notice(row, drifting, run.contact)
            return GuardVerdict(drifting, row.fingerprint, notice)

    @activity.defn
    async def assess(self, run: GuardRun) -> GuardVerdict:
        """The run's drift, recorded; the mail to send when this drift has not been mailed."""
        return await asyncio.to_thread(self._assess, run)

    def _mailed(self, mailed: GuardMailed) -> None:
        with self.sessions.begin() as session:
            mark_mailed(session, mailed.workflow_id, mailed.fingerprint)

    @activity.defn
    async def mailed(self, mailed: GuardMailed) -> None:
        await asyncio.to_thread(self._mailed, mailed)
