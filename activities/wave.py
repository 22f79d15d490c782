"""The rows of a wave, read from the store in pages by the wave's workflow."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from temporalio import activity
from temporalio.converter import value_to_type

from mailmove.base.model import RowPage, WaveRow
from mailmove.store.db import sessions
from mailmove.store.models import WaveRowRecord


class WaveActivities:
    def __init__(self, database_url: str):
        self.sessions = sessions(database_url)

    def _page(self, page: RowPage) -> list[WaveRow]:
        with self.sessions() as session:
            records = session.scalars(
                select(WaveRowRecord)
                .where(WaveRowRecord.batch == page.batch, WaveRowRecord.line > page.after)
                .order_by(WaveRowRecord.line)
                .limit(page.size)
            )
            return [value_to_type(WaveRow, r.body) for r in records]

    @activity.defn
    async def wave_rows(self, page: RowPage) -> list[WaveRow]:
        return await asyncio.to_thread(self._page, page)
