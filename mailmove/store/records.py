"""Reads and writes of the store, shared by the activities, the CLI and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mailmove.base.model import Notice, PortalFiling, Transition
from mailmove.base.report import Report
from mailmove.base.vocabulary import RequestState
from mailmove.store.models import (
    AuditEvent,
    CheckReport,
    Migration,
    Notification,
    PortalRequest,
    Survey,
    SurveyDomain,
    WaveRowRecord,
)


def write_transition(session: Session, t: Transition) -> bool:
    """Upsert the migration's row and add the audit event once; False if it was already there."""
    if session.get(AuditEvent, t.event_id) is not None:
        return False
    row = session.get(Migration, t.workflow_id)
    if row is None:
        row = Migration(workflow_id=t.workflow_id, kind=t.kind, subject=t.subject, created_at=t.at, updated_at=t.at)
        session.add(row)
    if aware(row.updated_at) <= t.at:
        row.stage, row.state, row.attention, row.updated_at = t.stage, t.state, t.attention, t.at
    session.flush()  # the event refers to the row
    session.add(
        AuditEvent(
            id=t.event_id,
            workflow_id=t.workflow_id,
            seq=t.seq,
            at=t.at,
            actor=t.actor,
            action=t.action,
            stage=t.stage,
            detail=t.detail,
            result=t.result,
        )
    )
    return True


def aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def migration_row(m: Migration) -> dict:
    """A migration as the CLI's `list --json` and the dashboard's API show it."""
    return {
        "id": m.workflow_id,
        "kind": m.kind,
        "subject": m.subject,
        "stage": m.stage,
        "state": m.state,
        "attention": m.attention,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }


def list_migrations(session: Session, kind: str | None = None) -> list[Migration]:
    query = select(Migration).order_by(Migration.updated_at.desc())
    if kind:
        query = query.where(Migration.kind == kind)
    return list(session.scalars(query))


def audit_trail(session: Session, workflow_id: str) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.workflow_id == workflow_id).order_by(AuditEvent.seq)
    return list(session.scalars(query))


def portal_requests(session: Session, workflow_id: str) -> list[PortalRequest]:
    query = select(PortalRequest).where(PortalRequest.workflow_id == workflow_id).order_by(PortalRequest.created_at)
    return list(session.scalars(query))


def begin_filing(session: Session, filing: PortalFiling) -> PortalRequest:
    """The filing's row, written as `submitting` before the portal is asked: a retry finds it,
    and one already filed is not sent again."""
    row = session.get(PortalRequest, filing.key)
    if row is None:
        row = PortalRequest(
            key=filing.key,
            workflow_id=filing.workflow_id,
            kind=filing.kind,
            subject=filing.subject,
            values=filing.values,
            state=RequestState.SUBMITTING,
            reference="",
            status="",
            created_at=datetime.now(UTC),
        )
        session.add(row)
    return row


def mark_filed(session: Session, key: str, reference: str, status: str) -> None:
    row = session.get(PortalRequest, key)
    row.state, row.reference, row.status = RequestState.FILED, reference, status
    row.filed_at = datetime.now(UTC)


def notice_sent(session: Session, key: str) -> bool:
    return session.get(Notification, key) is not None


def record_notice(session: Session, notice: Notice, message_id: str) -> None:
    """The notice as sent, under its key: a retry of the activity sends it no second time."""
    session.merge(
        Notification(
            key=notice.key,
            workflow_id=notice.workflow_id,
            event=notice.event,
            recipient=notice.to,
            message_id=message_id,
            sent_at=datetime.now(UTC),
        )
    )


def save_report(session: Session, workflow_id: str, stage: str, report: Report) -> None:
    """Replace the report of `stage`: a repeated write leaves one row with the latest run."""
    row = session.get(CheckReport, (workflow_id, stage)) or CheckReport(workflow_id=workflow_id, stage=stage)
    row.kind, row.subject, row.worst = report.kind, report.subject, report.worst
    row.checked_at = datetime.fromisoformat(report.checked_at)
    row.body = report.to_json()
    session.add(row)


def check_reports(session: Session, workflow_id: str) -> list[tuple[str, Report]]:
    """(stage, report) pairs of a move, in the order they were taken."""
    rows = session.scalars(
        select(CheckReport).where(CheckReport.workflow_id == workflow_id).order_by(CheckReport.checked_at)
    )
    return [(row.stage, Report.from_json(row.body)) for row in rows]


def save_wave_rows(session: Session, batch: str, wave_id: str, rows: list[tuple[int, str, dict]]) -> None:
    """A wave's validated rows, (line, workflow id, the row as JSON), under a batch of its own."""
    session.add_all(
        WaveRowRecord(batch=batch, line=line, wave_id=wave_id, workflow_id=wid, body=body) for line, wid, body in rows
    )


def save_survey(session: Session, survey: Survey, rows: list[tuple[str, str, str, dict]]) -> None:
    """The survey and its (domain, class, reason, body) rows, in place of the last one."""
    session.execute(delete(SurveyDomain))
    session.execute(delete(Survey))
    session.add(survey)
    session.flush()  # the rows refer to it
    session.add_all(
        SurveyDomain(survey_id=survey.id, domain=domain, survey_class=cls, reason=reason, body=body)
        for domain, cls, reason, body in rows
    )


def survey_counts(session: Session) -> dict[str, int]:
    """How many domains of the last survey are in each class; empty when none was stored."""
    query = select(SurveyDomain.survey_class, func.count()).group_by(SurveyDomain.survey_class)
    return {cls: n for cls, n in session.execute(query)}
