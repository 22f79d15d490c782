"""Prometheus metrics, computed from the store at each scrape (so every replica agrees):
migrations by kind, stage and state; stage durations; stages whose activity failed for good."""

from __future__ import annotations

from datetime import UTC

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from mailmove.config import Settings
from store.db import ready
from store.models import AuditEvent, Migration


class StoreCollector:
    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        with ready(self.settings.database.url)() as session:
            moves = GaugeMetricFamily(
                "mailmove_migrations", "Migrations by kind, stage and state", labels=["kind", "stage", "state"]
            )
            query = select(Migration.kind, Migration.stage, Migration.state, func.count()).group_by(
                Migration.kind, Migration.stage, Migration.state
            )
            for kind, stage, state, count in session.execute(query):
                moves.add_metric([kind, stage, state], count)
            yield moves

            durations = SummaryMetricFamily(
                "mailmove_stage_duration_seconds", "Time from a stage's start to its end", labels=["kind", "stage"]
            )
            events = session.execute(
                select(Migration.kind, AuditEvent.workflow_id, AuditEvent.stage, AuditEvent.action, AuditEvent.at)
                .join(Migration, Migration.workflow_id == AuditEvent.workflow_id)
                .where(AuditEvent.action.in_(("stage started", "stage done")))
                .order_by(AuditEvent.workflow_id, AuditEvent.seq)
            )
            started, totals = {}, {}
            for kind, wid, stage, action, at in events:
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                if action == "stage started":
                    started[(wid, stage)] = at
                elif (wid, stage) in started:
                    total = totals.setdefault((kind, stage), [0, 0.0])
                    total[0] += 1
                    total[1] += (at - started.pop((wid, stage))).total_seconds()
            for (kind, stage), (count, seconds) in sorted(totals.items()):
                durations.add_metric([kind, stage], count, seconds)
            yield durations

            failures = CounterMetricFamily(
                "mailmove_stage_failures",
                "Stage activities that failed for good (then waited for a person)",
                labels=["stage"],
            )
            query = (
                select(AuditEvent.stage, func.count())
                .where(AuditEvent.action == "escalated", AuditEvent.detail.contains(" failed: "))
                .group_by(AuditEvent.stage)
            )
            for stage, count in session.execute(query):
                failures.add_metric([stage], count)
            yield failures


def metrics_text(settings: Settings) -> bytes:
    registry = CollectorRegistry()
    registry.register(StoreCollector(settings))
    return generate_latest(registry)
