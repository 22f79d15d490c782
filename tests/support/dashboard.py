"""The dashboard as a browser uses it: the move of DOMAIN it shows, and the way in."""

from __future__ import annotations

import re

import httpx
from temporalio.client import Client

from mailmove.base.config import Settings
from mailmove.dashboard.app import create_app
from mailmove.dashboard.auth import issue_token
from tests.support.domain_move import DOMAIN
from tests.support.polling import wait_for

LEGACY = f"mail.{DOMAIN}"
WID = f"domain-move:{DOMAIN}"


async def login(c: httpx.AsyncClient, token: str) -> str:
    """The browser's way in: the form's CSRF token, then the token; returns the session's CSRF
    token (made at the login: the form's is spent)."""
    page = await c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = await c.post("/login", data={"token": token, "csrf": csrf, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    return re.search(r'name="csrf" value="([^"]+)"', (await c.get("/")).text).group(1)


def signed_in(settings: Settings, client: Client, role: str) -> httpx.AsyncClient:
    """The dashboard's app in this process, for the API and /metrics with a bearer token of `role`."""
    token = issue_token(settings, f"{role}-user", role)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, client)),
        base_url="http://dash",
        headers={"Authorization": f"Bearer {token}"},
    )


async def until_healthy(c: httpx.AsyncClient, timeout: float, what: str) -> None:
    """Until a dashboard started as a process or a container answers /healthz (it may not listen yet)."""

    async def healthy() -> bool:
        try:
            return (await c.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(healthy, timeout=timeout, what=what)


async def until_state(c: httpx.AsyncClient, subject: str, state: str, timeout: float, what: str) -> None:
    """Until the dashboard's API shows `subject`'s move in `state`."""

    async def reached() -> bool:
        return (await c.get(f"/api/migrations/{subject}")).json()["status"]["state"] == state

    await wait_for(reached, timeout=timeout, interval=1, what=what)
