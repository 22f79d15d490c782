"""The guards' rows: a finished move's baseline (the findings of its `done` report), its drift,
and the drift last mailed. The activities write them, the service and the dashboard read them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailmove.base.report import Check, Report
from mailmove.base.vocabulary import Stage
from mailmove.store.models import CheckReport, Guard
from mailmove.store.records import aware


def done_report(session: Session, workflow_id: str) -> Report | None:
    row = session.get(CheckReport, (workflow_id, Stage.DONE))
    return None if row is None else Report.from_json(row.body)


def add_guard(
    session: Session,
    workflow_id: str,
    schedule_id: str,
    kind: str,
    subject: str,
    input: dict,
    baseline: dict[str, str] | None,
    done_at: datetime | None,
    at: datetime,
) -> Guard:
    """The guard's row, made once: a second call (a retry, `guard adopt`) changes nothing, not even
    what it checks (adopt may know less of the move than its done path did: no contact once
    Temporal has dropped the move's history), unless the `done` report at `done_at` is newer (the
    subject was moved again): then it begins anew."""
    row = session.get(Guard, workflow_id)
    if row is None:
        row = Guard(workflow_id=workflow_id)
        session.add(row)
    elif done_at is None or done_at <= aware(row.created_at):
        return row
    row.input, row.schedule_id, row.kind, row.subject, row.baseline = input, schedule_id, kind, subject, baseline
    row.drift, row.fingerprint, row.mailed, row.drift_since, row.created_at = [], "", "", None, at
    return row


def record_drift(session: Session, row: Guard, drifting: list[Check], fingerprint: str, at: datetime) -> None:
    """A run's drift; none clears it, and what was mailed with it (a drift that comes back is news)."""
    if fingerprint and not row.fingerprint:
        row.drift_since = at
    elif not fingerprint:
        row.drift_since, row.mailed = None, ""
    row.drift = [asdict(c) for c in drifting]
    row.fingerprint = fingerprint
    row.last_run_at = at


def mark_mailed(session: Session, workflow_id: str, fingerprint: str) -> None:
    row = session.get(Guard, workflow_id)
    if row is not None and row.fingerprint == fingerprint:
        row.mailed = fingerprint


def note_guard(session: Session, workflow_id: str, note: str) -> None:
    """The last pause or resume: who, when, and the person's note (the schedule keeps none)."""
    row = session.get(Guard, workflow_id)
    if row is not None:
        row.note = note


def guard_rows(session: Session) -> list[Guard]:
    return list(session.scalars(select(Guard).order_by(Guard.subject)))


def drift_of(row: Guard) -> list[Check]:
    return [Check(**c) for c in row.drift or []]
