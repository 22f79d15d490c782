"""A finished move's guard on the dev server, as the guard tests drive it: its schedule gone before
the test (the dev server is shared), a run triggered and waited for, its row, its mails."""

from __future__ import annotations

import asyncio
import email
import email.policy

from temporalio.client import Client, ScheduleHandle
from temporalio.service import RPCError

from mailmove.base import ids
from mailmove.base.config import Settings
from mailmove.base.guard import GuardResult
from mailmove.sandbox.world import Sandbox
from mailmove.store.db import sessions
from mailmove.store.models import Guard
from tests.support.polling import wait_for


def drift_mails(world: Sandbox, wid: str) -> list[email.message.EmailMessage]:
    """The drift mails of the move `wid`'s guard that reached the internal relay stand-in."""
    sent = [email.message_from_bytes(m, policy=email.policy.default) for m in world.relays["internal"].handler.messages]
    return [m for m in sent if m["X-Mailmove-Event"] == f"drift {wid}"]


def row(settings: Settings, wid: str) -> Guard | None:
    with sessions(settings.database.url)() as session:
        return session.get(Guard, wid)


async def forget(client: Client, schedule_id: str) -> None:
    """The dev server is shared: a guard an earlier test's move left is gone before this one."""
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError:
        pass


async def trigger(client: Client, schedule: ScheduleHandle) -> GuardResult:
    """Trigger a run (as `temporal schedule trigger` does) and wait for its end; its result."""
    before = len((await schedule.describe()).info.recent_actions)
    await schedule.trigger()

    async def ended():
        recent = (await schedule.describe()).info.recent_actions
        return recent[-1] if len(recent) > before else None

    action = await wait_for(ended, timeout=60, what="the triggered run")
    return await client.get_workflow_handle(action.action.workflow_id, result_type=GuardResult).result()


async def run_once(client: Client, schedule: ScheduleHandle, settings: Settings) -> Guard:
    """A triggered run, ended; the guard's row after it."""
    await trigger(client, schedule)
    return await asyncio.to_thread(row, settings, ids.guarded(schedule.id))
