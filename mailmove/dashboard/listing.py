"""The list of migrations from the store: filters, search, last change first, pages, counts.

It reads only the database (the read model), so it stays fast with many thousand moves and
works while Temporal is away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select

from mailmove.base.config import Settings
from mailmove.dashboard.principal import Principal
from mailmove.dashboard.scope import comparable
from mailmove.store.db import ready
from mailmove.store.models import Guard, Migration
from mailmove.store.records import migration_row

PAGE_SIZE = 50


@dataclass
class Filters:
    kind: str = ""
    stage: str = ""
    state: str = ""
    attention: bool = False
    drift: bool = False  # only the finished moves whose guard finds drift
    q: str = ""  # a part of the domain or host name
    page: int = 1


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    counts: dict[str, int]  # per state, over everything the principal sees
    attention: int
    drifting: int  # finished moves whose guard finds what was not there at `done`
    page: int
    pages: int
    filters: Filters = field(default_factory=Filters)


def _visible(query, principal: Principal):
    """The moves of the principal's domains and of hosts within them (as `scope.sees` decides)."""
    if not principal.domains:
        return query
    domains = map(comparable, principal.domains)
    return query.where(
        or_(*(or_(Migration.subject == d, Migration.subject.endswith("." + d, autoescape=True)) for d in domains))
    )


def page_of(settings: Settings, principal: Principal, f: Filters) -> Page:
    with ready(settings.database.url)() as session:
        base = _visible(select(Migration), principal)
        counts = dict(
            session.execute(_visible(select(Migration.state, func.count()).group_by(Migration.state), principal)).all()
        )
        attention = session.scalar(
            _visible(select(func.count()).select_from(Migration).where(Migration.attention.is_(True)), principal)
        )
        drifting_ids = select(Guard.workflow_id).where(Guard.fingerprint != "")
        drifting = session.scalar(
            _visible(
                select(func.count()).select_from(Migration).where(Migration.workflow_id.in_(drifting_ids)), principal
            )
        )
        query = base
        if f.kind:
            query = query.where(Migration.kind == f.kind)
        if f.stage:
            query = query.where(Migration.stage == f.stage)
        if f.state:
            query = query.where(Migration.state == f.state)
        if f.attention:
            query = query.where(Migration.attention.is_(True))
        if f.drift:
            query = query.where(Migration.workflow_id.in_(drifting_ids))
        if f.q:
            query = query.where(Migration.subject.contains(f.q.strip().lower()))
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        pages = max(1, -(-total // PAGE_SIZE))
        number = min(max(1, f.page), pages)
        rows = [
            migration_row(m)
            for m in session.scalars(
                query.order_by(Migration.updated_at.desc()).offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE)
            )
        ]
        drift = dict(
            session.execute(
                select(Guard.workflow_id, Guard.drift).where(Guard.workflow_id.in_([r["id"] for r in rows]))
            ).all()
        )
        for row in rows:
            row["drift"] = len(drift.get(row["id"]) or [])  # the badge: how many findings drift
        return Page(rows, total, counts, attention or 0, drifting or 0, number, pages, f)
