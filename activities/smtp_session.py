"""An SMTP client session of mailmove's own (the RCPT probe, the mail to a contact): QUIT when
its work is done, and no QUIT when it is stopped. A cancel or the worker's shutdown
(activities/heartbeat.py) ends it at once, instead of waiting up to `smtp.timeout` for a
silent peer's reply to a QUIT that nobody needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosmtplib


@asynccontextmanager
async def connected(client: aiosmtplib.SMTP) -> AsyncIterator[aiosmtplib.SMTP]:
    await client.connect()
    try:
        yield client
    except (asyncio.CancelledError, aiosmtplib.SMTPTimeoutError):
        client.close()  # stopped, or the peer fell silent: it would not answer a QUIT either
        raise
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
