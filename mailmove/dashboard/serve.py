"""The dashboard on uvicorn: inside `mailmove up`, in the same event loop as the worker and
stopped with it, or alone (`mailmove dashboard`), stopped by SIGTERM or SIGINT.

uvicorn runs without `proxy_headers`: the client address the app sees is the connection's own
peer, never what an `X-Forwarded-For` claims, so `dashboard.trusted_proxies` is checked against
the address a proxy really connects from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from temporalio.client import Client

from mailmove.base.config import Settings
from mailmove.base.errors import ConfigError
from mailmove.dashboard.app import create_app
from mailmove.dashboard.auth import issue_login_token


class _Embedded(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Signals are `mailmove up`'s to handle: it stops the dashboard with everything else."""
        yield


@asynccontextmanager
async def serving(settings: Settings, client: Client | None, login: bool = True) -> AsyncIterator[str]:
    """Serve until the block ends; yields the one-time login URL (a fresh admin token, valid for
    `dashboard.login_token_ttl`; the earlier unused ones are revoked), or "" without `login` (a
    production dashboard behind OIDC or a proxy prints no credential)."""
    listen = settings.dashboard.listen
    server = _Embedded(
        uvicorn.Config(
            create_app(settings, client),
            host=listen.host,
            port=listen.port,
            log_level="warning",
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise ConfigError("dashboard.listen", f"{listen} cannot be served (in use?): {task.exception() or 'exit'}")
        await asyncio.sleep(0.02)
    url = ""
    if login:
        token = await asyncio.to_thread(issue_login_token, settings)
        url = f"http://{listen}/login?token={token}"
    try:
        yield url
    finally:
        server.should_exit = True
        await task
