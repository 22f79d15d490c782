"""The name mailmove's own SMTP sessions greet with: `smtp.helo`, else this host's FQDN."""

from __future__ import annotations

import asyncio
import functools
import socket

from mailmove.base.config import SmtpConfig


@functools.cache
def _fqdn() -> str:
    return socket.getfqdn()


async def helo_name(smtp: SmtpConfig) -> str:
    """`socket.getfqdn` asks the resolver (a reverse lookup that can take seconds), so it runs in
    a thread, once a process, not on the event loop that beats for every running activity."""
    return smtp.helo or await asyncio.to_thread(_fqdn)
