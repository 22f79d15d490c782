"""The check runs of the moves' `preflight` and `done` stages, and their reports stored.

A check only reads (DNS, one SMTP dialogue without an envelope, one HTTPS fetch), so a retry
is harmless; the report is stored under (workflow id, stage), so a retry stores it once.
"""

import asyncio
from dataclasses import dataclass

from temporalio import activity

from activities.dns import DnsActivities
from activities.heartbeat import beating
from mailmove.base.config import Settings
from mailmove.base.report import DomainCheckQuery, Report, ServerCheckQuery
from mailmove.checks.domain import DomainChecks
from mailmove.checks.server import ServerChecks
from mailmove.store.db import sessions
from mailmove.store.records import save_report


@dataclass
class StoredReport:
    workflow_id: str
    stage: str
    report: Report


class CheckActivities:
    def __init__(self, settings: Settings, dns: DnsActivities):
        self.settings = settings
        self.dns = dns
        self.sessions = sessions(settings.database.url)

    @activity.defn
    @beating
    async def check_domain(self, query: DomainCheckQuery) -> Report:
        return await DomainChecks(self.settings, self.dns).run(query)

    @activity.defn
    @beating
    async def check_server(self, query: ServerCheckQuery) -> Report:
        return await ServerChecks(self.settings, self.dns).run(query)

    def _store(self, stored: StoredReport) -> None:
        with self.sessions.begin() as session:
            save_report(session, stored.workflow_id, stored.stage, stored.report)

    @activity.defn
    @beating
    async def store_report(self, stored: StoredReport) -> None:
        await asyncio.to_thread(self._store, stored)
