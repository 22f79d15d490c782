"""The dashboard: FastAPI serving server-rendered pages (Jinja2, htmx for live refresh) and a
JSON API for the same reads and actions, behind authentication. Part of `mailmove up`.

Both do what mailmove/dashboard/actions.py does, through mailmove.service (the CLI's own path):
the same validation, the same Temporal updates, with the signed-in user as the actor written
to the audit history.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware
from temporalio.client import Client

from mailmove.base.config import Settings
from mailmove.dashboard import api, codec, oidc, pages, problems
from mailmove.dashboard.auth import Authenticator
from mailmove.dashboard.deps import needs, temporal
from mailmove.dashboard.headers import SecurityHeaders
from mailmove.dashboard.limits import BodyLimit
from mailmove.dashboard.metrics import metrics_text
from mailmove.dashboard.principal import Principal
from mailmove.service.guard import Schedules
from mailmove.store.db import ready

log = logging.getLogger("mailmove.dashboard")


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
    app.state.schedules = Schedules()  # the guards' schedules as Temporal said them lately
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
        # the id of the session in the store (mailmove/dashboard/sessions.py), which ends it there
        max_age=math.ceil(settings.dashboard.session_absolute),
    )
    app.add_middleware(BodyLimit, limit=settings.dashboard.max_body, paths={"/codec/": codec.MAX_BODY})
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")
    app.state.oidc = oidc.client_for(settings) if settings.dashboard.oidc_issuer else None
    app.include_router(api.router)
    app.include_router(oidc.router)
    app.include_router(codec.router)
    app.include_router(pages.router)
    problems.install(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """200 when Temporal and the database answer, else 503 naming what does not. Anyone may
        ask (a load balancer), so the reason (host names, a driver's message) goes to the log."""
        down = {}
        try:
            await (await temporal(request)).service_client.check_health()
        except Exception:  # noqa: BLE001 - any failure is the answer
            log.warning("healthz: Temporal does not answer", exc_info=True)
            down["temporal"] = "does not answer"
        try:
            await asyncio.to_thread(_ping, settings)
        except Exception:  # noqa: BLE001
            log.warning("healthz: the database does not answer", exc_info=True)
            down["database"] = "does not answer"
        return JSONResponse({"ok": not down, **down}, status_code=503 if down else 200)

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
