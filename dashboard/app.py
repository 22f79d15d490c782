"""The dashboard: FastAPI serving server-rendered pages (Jinja2, htmx for live refresh) and a
JSON API for the same reads and actions, behind authentication. Part of `mailmove up`.

Every action goes through `mailmove.control` (the CLI's own path): the same validation, the
same Temporal updates, with the signed-in user as the actor written to the audit history.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware
from temporalio.client import Client

from dashboard.auth import Authenticator, Principal, check_csrf
from dashboard.headers import SecurityHeaders
from dashboard.limits import BodyLimit
from dashboard.metrics import metrics_text
from mailmove.config import Settings
from mailmove.temporal import connect
from store.db import ready

HERE = Path(__file__).parent
log = logging.getLogger("mailmove.dashboard")
HTMX = "htmx-2.0.11.min.js"  # htmx.org 2.0.11 from npm, sha256 in static/VENDORED.md


def session_secret(settings: Settings) -> str:
    """From `dashboard.session_secret_file`, else `var/dashboard-secret`, made once (mode 0600)."""
    path = Path(settings.dashboard.session_secret_file or settings.var_dir / "dashboard-secret")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The app; `client` is the Temporal client of `mailmove up`, else one is connected on demand."""
    from dashboard import api, codec, oidc, pages

    app = FastAPI(
        title="mailmove",
        description="Domain and server moves behind the central mail gateway: reads and actions.",
        version="1",
        # Swagger and ReDoc pages load their code from a public CDN: off; /openapi.json stays
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.client = client
    app.state.auth = Authenticator(settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="mailmove_session",
        # lax: an identity provider's redirect back (a cross-site GET) must bring the login's
        # state; a cross-site POST brings no cookie, and every POST needs the CSRF token anyway
        same_site="lax",
        https_only=settings.dashboard.secure_cookies,
        # the cookie holds pre-login state (the login form's CSRF token, OIDC's state) and then
        # the id of the session in the store (dashboard/sessions.py), which ends it there
        max_age=math.ceil(settings.dashboard.session_absolute),
    )
    app.add_middleware(BodyLimit, limit=settings.dashboard.max_body, paths={"/codec/": codec.MAX_BODY})
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.oidc = oidc.client_for(settings) if settings.dashboard.oidc_issuer else None
    app.include_router(api.router)
    app.include_router(oidc.router)
    app.include_router(codec.router)
    app.include_router(pages.router)
    api.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """200 when Temporal and the database answer, else 503 naming what does not. Anyone may
        ask (a load balancer), so the reason (host names, a driver's message) goes to the log."""
        problems = {}
        try:
            await (await temporal(request)).service_client.check_health()
        except Exception:  # noqa: BLE001 - any failure is the answer
            log.warning("healthz: Temporal does not answer", exc_info=True)
            problems["temporal"] = "does not answer"
        try:
            await asyncio.to_thread(_ping, settings)
        except Exception:  # noqa: BLE001
            log.warning("healthz: the database does not answer", exc_info=True)
            problems["database"] = "does not answer"
        return JSONResponse({"ok": not problems, **problems}, status_code=503 if problems else 200)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(principal: Principal = needs("viewer", everywhere=True)) -> PlainTextResponse:
        """For a scraper with a token (Prometheus' `authorization.credentials_file`)."""
        return PlainTextResponse(
            await asyncio.to_thread(metrics_text, settings), media_type="text/plain; version=0.0.4"
        )

    return app


def _ping(settings: Settings) -> None:
    with ready(settings.database.url)() as session:
        session.execute(text("select 1"))


async def temporal(request: Request) -> Client:
    if request.app.state.client is None:
        request.app.state.client = await connect(request.app.state.settings)
    return request.app.state.client


async def signed_in(request: Request) -> Principal | None:
    return await request.app.state.auth.who(request)


def needs(role: str, html: bool = False, everywhere: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, who must hold `role` (and, with `everywhere`, be limited to
    no domains: what the route gives spans them all); a POST must also pass the CSRF check."""

    async def dependency(request: Request) -> Principal:
        principal = await signed_in(request)
        if principal is None:
            if html:
                raise HTTPException(303, headers={"Location": f"/login?next={request.url.path}"})
            raise HTTPException(401, "not signed in: use a token (Authorization: Bearer) or log in")
        if not principal.can(role):
            raise HTTPException(403, f"role: {principal.name} is {principal.role}; this needs {role}")
        if everywhere and principal.domains:
            raise HTTPException(403, f"role: {principal.name} is limited to some domains; this spans all")
        if request.method == "POST":
            await check_csrf(request, principal)
        return principal

    return Depends(dependency)
