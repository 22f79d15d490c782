"""Prometheus metrics, computed from the store at each scrape (so every replica agrees):
migrations by kind, stage and state; stage durations; stages whose activity failed for good;
the guards' drift by kind and check; the campus summary of the front page."""

from __future__ import annotations

from collections import Counter
from datetime import UTC

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from mailmove.base.config import Settings
from mailmove.base.vocabulary import Action
from mailmove.checks.drift import check_name
from mailmove.service.guard import campus
from mailmove.store.db import ready
from mailmove.store.guards import drift_of, guard_rows
from mailmove.store.models import AuditEvent, Migration


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
                .where(AuditEvent.action.in_((Action.STAGE_STARTED, Action.STAGE_DONE)))
                .order_by(AuditEvent.workflow_id, AuditEvent.seq)
            )
            started, totals = {}, {}
            for kind, wid, stage, action, at in events:
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                if action == Action.STAGE_STARTED:
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
                .where(AuditEvent.action == Action.ESCALATED, AuditEvent.detail.contains(" failed: "))
                .group_by(AuditEvent.stage)
            )
            for stage, count in session.execute(query):
                failures.add_metric([stage], count)
            yield failures

            drift = GaugeMetricFamily(
                "mailmove_drift",
                "Findings of finished moves' guards that were not there when the move was done",
                labels=["kind", "check"],
            )
            found = Counter((row.kind, check_name(c.id)) for row in guard_rows(session) for c in drift_of(row))
            for (kind, check), count in sorted(found.items()):
                drift.add_metric([kind, check], count)
            yield drift

        domains = GaugeMetricFamily(
            "mailmove_campus_domains",
            "Domains behind the gateway and not yet (the last survey), moving and drifting (now), and the "
            "survey's other classes",
            labels=["class"],
        )
        for name, count in campus(self.settings).items():
            if count is not None:
                domains.add_metric([name], count)
        yield domains


def metrics_text(settings: Settings) -> bytes:
    registry = CollectorRegistry()
    registry.register(StoreCollector(settings))
    return generate_latest(registry)
