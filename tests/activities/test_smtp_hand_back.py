"""A worker told to stop hands an SMTP attempt back at once, even when the peer has fallen
silent: the session is closed without a QUIT, whose reply would be waited for up to
`smtp.timeout` (30 s here) before the attempt could be retried elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.dns import DnsActivities
from activities.heartbeat import WORKER_SHUTDOWN
from activities.notify import NotifyActivities
from activities.smtp_probe import ProbeActivities
from mailmove.base.config import HostPort, NotifyConfig
from mailmove.base.model import Notice, ProbeQuery
from mailmove.sandbox.world import GATEWAY_MX
from tests.support.settings import settings_for

SMTP_TIMEOUT = 30.0


class FallsSilent:
    """An SMTP peer that greets and answers EHLO (offering STARTTLS if told) and MAIL, then
    answers nothing more (RCPT, STARTTLS, QUIT): a gateway or relay that hangs mid-dialogue.
    It notes every line it got."""

    def __init__(self, starttls: bool) -> None:
        self.ehlo = b"250-silent.test\r\n250 STARTTLS\r\n" if starttls else b"250-silent.test\r\n250 8BITMIME\r\n"
        self.lines: list[str] = []
        self.waiting = asyncio.Event()  # a command is left unanswered

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 silent.test ESMTP\r\n")
        while line := (await reader.readline()).decode().strip():
            self.lines.append(line)
            verb = line.split()[0].upper()
            if verb == "EHLO":
                writer.write(self.ehlo)
            elif verb == "MAIL":
                writer.write(b"250 ok\r\n")
            else:
                self.waiting.set()
        writer.close()


@asynccontextmanager
async def falls_silent(starttls: bool) -> AsyncIterator[tuple[FallsSilent, int]]:
    peer = FallsSilent(starttls)
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    async with server:
        yield peer, server.sockets[0].getsockname()[1]


async def handed_back(env: ActivityEnvironment, peer: FallsSilent, run) -> float:
    """Seconds from the worker's shutdown to the attempt's end, which must be a hand-back."""
    attempt = asyncio.create_task(run)
    await asyncio.wait_for(peer.waiting.wait(), 10)
    began = time.monotonic()
    env.worker_shutdown()
    with pytest.raises(ApplicationError) as err:
        await asyncio.wait_for(attempt, SMTP_TIMEOUT * 2)
    assert err.value.type == WORKER_SHUTDOWN, err.value
    return time.monotonic() - began


async def test_the_rcpt_probe_is_handed_back_without_waiting_for_quit(sandbox_factory):
    settings = settings_for(sandbox_factory())
    smtp = replace(settings.smtp, timeout=SMTP_TIMEOUT)
    probe = ProbeActivities(smtp, DnsActivities(settings))
    env = ActivityEnvironment()
    async with falls_silent(starttls=False) as (peer, port):
        took = await handed_back(
            env, peer, env.run(probe.probe_rcpt, ProbeQuery(GATEWAY_MX, port, "postmaster@chem.sandbox.test"))
        )
    assert peer.lines[-1].upper().startswith("RCPT TO:") and not any(line.upper() == "QUIT" for line in peer.lines)
    assert took < 2, took


async def test_a_notice_is_handed_back_without_waiting_for_quit(sandbox_factory):
    settings = settings_for(sandbox_factory())
    env = ActivityEnvironment()
    async with falls_silent(starttls=True) as (peer, port):
        configured = replace(
            settings,
            smtp=replace(settings.smtp, timeout=SMTP_TIMEOUT),
            notify=NotifyConfig(sender="mailmove@sandbox.test", relay=HostPort("127.0.0.1", port)),
        )
        notify = NotifyActivities(configured, DnsActivities(configured))
        notice = Notice("hand-back-1", "move-1", "done", "postmaster@chem.sandbox.test", "done", "moved")
        took = await handed_back(env, peer, env.run(notify.send_notice, notice))
    assert peer.lines[-1].upper() == "STARTTLS" and "QUIT" not in (line.upper() for line in peer.lines)
    assert took < 2, took
