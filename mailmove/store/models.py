"""Tables: one row per migration (the read model), its audit trail, and portal requests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Migration(Base):
    """The latest known state of one workflow, for lists that must not depend on Temporal."""

    __tablename__ = "migrations"

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(260))
    stage: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    attention: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_migrations_updated_at", "updated_at"),
        Index("ix_migrations_subject", "subject"),
        Index("ix_migrations_state_updated", "state", "updated_at"),
    )


class AuditEvent(Base):
    """Who did what, when, with which result. `id` comes from the workflow, so writes are idempotent."""

    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("migrations.workflow_id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    stage: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_audit_events_workflow_seq", "workflow_id", "seq"),)


class PortalRequest(Base):
    """A request filed with the centre, recorded before and after it is sent."""

    __tablename__ = "portal_requests"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(260))
    values: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))  # submitting, filed
    reference: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    filed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    """A mailmove/dashboard/API credential: only the SHA-256 of the random secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also the secret's public prefix
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))  # whose it is: the identity of its actions
    role: Mapped[str] = mapped_column(String(20))  # viewer, operator, admin
    domains: Mapped[list] = mapped_column(JSON, default=list)  # an operator limited to these, if any
    once: Mapped[bool] = mapped_column(Boolean, default=False)  # a login token, spent at first use
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # login tokens


class DashboardSession(Base):
    """A browser's login: the cookie holds the random id, the store its SHA-256. Each request
    looks it up, so a logout, a revoked token and a changed role take effect at once."""

    __tablename__ = "sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(32), index=True)  # the token id it was made with, or "oidc"
    role: Mapped[str] = mapped_column(String(20))  # as granted at login; requests use what is granted now
    domains: Mapped[list] = mapped_column(JSON, default=list)
    csrf: Mapped[str] = mapped_column(String(64))  # made at login: no pre-login value is valid after it
    flash: Mapped[str] = mapped_column(Text, default="")  # an action's result, shown once on the next page
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CheckReport(Base):
    """The check report a move stored at a stage (`preflight`, `done`): one per stage, replaced
    when the stage runs again, so a retried activity writes it once."""

    __tablename__ = "check_reports"

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    stage: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # domain | server
    subject: Mapped[str] = mapped_column(String(260))
    worst: Mapped[str] = mapped_column(String(20))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[dict] = mapped_column(JSON)  # the report as `mailmove check --json` prints it


class Notification(Base):
    """An e-mail sent to a move's contact, recorded once sent, so a retried activity does not
    send it again."""

    __tablename__ = "notifications"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300), index=True)
    event: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(400))
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WaveRowRecord(Base):
    """One row of a wave as validated by the CLI: the wave's workflow loads its rows from here
    in pages, so a wave of thousands of moves is no single oversized workflow input."""

    __tablename__ = "wave_rows"

    batch: Mapped[str] = mapped_column(String(40), primary_key=True)  # one per `wave start`
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    wave_id: Mapped[str] = mapped_column(String(200), index=True)
    workflow_id: Mapped[str] = mapped_column(String(300))
    body: Mapped[dict] = mapped_column(JSON)  # the WaveRow, with its move's whole input


class Guard(Base):
    """The guard of a finished move: the findings of its `done` report (the baseline), the
    findings that were not there then (the drift), and the drift last mailed to the contact."""

    __tablename__ = "guards"

    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)  # the move's
    schedule_id: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(260), index=True)
    # what a run checks (a GuardInput): here, not in the schedule, whose arguments a payload key
    # would bind to the schedule's id and not to the runs' (`guard:<id>-<time>`)
    input: Mapped[dict] = mapped_column(JSON)
    # ids of the checks not ok at `done`; None: the move stored no report then, the first run's
    baseline: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    drift: Mapped[list] = mapped_column(JSON, default=list)  # the drifting checks, as reports hold them
    fingerprint: Mapped[str] = mapped_column(String(64), default="")  # of the drift; "" without
    mailed: Mapped[str] = mapped_column(String(64), default="")  # the fingerprint last mailed
    drift_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the last pause or resume: who, when, their note; here, not in the schedule's state, which
    # Temporal keeps in clear
    note: Mapped[str] = mapped_column(Text, default="", server_default="")


class Survey(Base):
    """The last `mailmove survey`: what it read and when. A new survey replaces it (and its rows)."""

    __tablename__ = "surveys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(300))  # the file's name, or `zone NAME`
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    domains: Mapped[int] = mapped_column(Integer)


class SurveyDomain(Base):
    """One domain of the last survey: its class (a SurveyClass), why, and what was found."""

    __tablename__ = "survey_domains"

    survey_id: Mapped[str] = mapped_column(ForeignKey("surveys.id", ondelete="CASCADE"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(260), primary_key=True)
    survey_class: Mapped[str] = mapped_column("class", String(20))
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[dict] = mapped_column(JSON)  # the domain as `mailmove survey --json` prints it
