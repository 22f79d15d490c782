"""Audit trail and read model writes: one transaction per transition, idempotent by event id."""

from __future__ import annotations

import asyncio

from temporalio import activity

from mailmove.base.model import Transition
from mailmove.store.db import sessions
from mailmove.store.records import write_transition


class AuditActivities:
    def __init__(self, database_url: str):
        self.sessions = sessions(database_url)

    def _write(self, transition: Transition) -> bool:
        with self.sessions.begin() as session:
            return write_transition(session, transition)

    @activity.defn
    async def record_transition(self, transition: Transition) -> bool:
        return await asyncio.to_thread(self._write, transition)
