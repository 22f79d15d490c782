"""Browser sessions in the store (table `sessions`). The signed cookie carries a random id and
nothing else; the store keeps the id's SHA-256, who signed in and with what (a token's id, or
OIDC), the session's CSRF token and a flash. Every request looks the session up, so a logout,
a revoked token, idle or absolute expiry (`dashboard.session_idle`, `session_absolute`) and a
role changed in the token or the configuration take effect at the next request."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy import ColumnElement, and_, delete, select, update

from mailmove.base.config import DashboardConfig, Settings
from mailmove.dashboard.principal import Principal
from mailmove.store.db import ready
from mailmove.store.models import ApiToken, DashboardSession

OIDC = "oidc"  # the origin of a session opened by an OIDC login
SESSION_KEY = "session"  # the session id's key in the signed cookie


def digest(secret: str) -> str:
    """What the store keeps of a token's secret or a session's id."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Visit:
    """A live session as a request found it: whom it is for, with the role and domains they
    hold now, and its CSRF token."""

    digest: str
    name: str
    role: str
    domains: tuple[str, ...]
    csrf: str


def _fresh(d: DashboardConfig, now: datetime) -> ColumnElement[bool]:
    return and_(
        DashboardSession.last_seen_at > now - timedelta(seconds=d.session_idle),
        DashboardSession.created_at > now - timedelta(seconds=d.session_absolute),
    )


def open_session(settings: Settings, principal: Principal, origin: str, replacing: str = "") -> str:
    """A new session; returns its id, for the cookie. The browser's earlier session (`replacing`)
    and every expired one are deleted."""
    now = datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    stale = ~_fresh(settings.dashboard, now)
    if replacing:
        stale = stale | (DashboardSession.digest == digest(replacing))
    with ready(settings.database.url).begin() as session:
        session.execute(delete(DashboardSession).where(stale))
        session.add(
            DashboardSession(
                digest=digest(session_id),
                name=principal.name,
                origin=origin,
                role=principal.role,
                domains=list(principal.domains),
                csrf=secrets.token_urlsafe(24),
                flash="",
                created_at=now,
                last_seen_at=now,
            )
        )
    return session_id


def resume(settings: Settings, session_id: str, touch: bool = True) -> Visit | None:
    """The session behind `session_id` if it is live, its role and domains taken anew from its
    token's row or, for OIDC, the configuration; None (and the row deleted) if it has ended.
    Only a request a person made (`touch`) counts as activity: a page's own refreshes do not,
    or an open tab would never reach the idle limit."""
    now = datetime.now(UTC)
    key = digest(session_id)
    d = settings.dashboard
    with ready(settings.database.url).begin() as session:
        row = session.scalar(select(DashboardSession).where(DashboardSession.digest == key, _fresh(d, now)))
        if row is not None and row.origin == OIDC:
            granted = d.grant(row.name)
        elif row is not None and (token := session.get(ApiToken, row.origin)) is not None and not token.revoked:
            granted = token.role, tuple(token.domains or ())
        else:  # unknown, expired, or its token revoked
            session.execute(delete(DashboardSession).where(DashboardSession.digest == key))
            return None
        if touch:
            row.last_seen_at = now
        return Visit(key, row.name, *granted, row.csrf)


def close_session(settings: Settings, session_id: str) -> None:
    with ready(settings.database.url).begin() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.digest == digest(session_id)))


def _put_flash(settings: Settings, key: str, text: str) -> None:
    with ready(settings.database.url).begin() as session:
        session.execute(update(DashboardSession).where(DashboardSession.digest == key).values(flash=text))


def _take_flash(settings: Settings, key: str) -> str:
    with ready(settings.database.url).begin() as session:
        row = session.get(DashboardSession, key)
        if row is None:
            return ""
        text, row.flash = row.flash, ""
        return text


def visit_of(request: Request) -> Visit | None:
    """The session that `Authenticator.who` found in this request, if any."""
    return getattr(request.state, "visit", None)


async def sign_in(request: Request, principal: Principal, origin: str) -> None:
    """Open a session for `principal`. The cookie then holds its id alone: whatever it held
    before the login, the pre-login CSRF token among it, is gone."""
    settings = request.app.state.settings
    earlier = request.session.get(SESSION_KEY, "")
    session_id = await asyncio.to_thread(open_session, settings, principal, origin, earlier)
    request.session.clear()
    request.session[SESSION_KEY] = session_id


async def sign_out(request: Request) -> None:
    """The session's row is deleted, so a copy of the cookie is worth nothing after it."""
    if session_id := request.session.get(SESSION_KEY):
        await asyncio.to_thread(close_session, request.app.state.settings, session_id)
    request.session.clear()


async def flash(request: Request, text: str) -> None:
    """An action's result for the next page, kept in the session (never in the URL, where anyone
    could write one); for a proxy's user, who has no session row, in the signed cookie."""
    visit = visit_of(request)
    if visit is None:
        request.session["flash"] = text
    else:
        await asyncio.to_thread(_put_flash, request.app.state.settings, visit.digest, text)


async def flashed(request: Request) -> str:
    """The flash, once: reading it clears it."""
    visit = visit_of(request)
    if visit is None:
        return request.session.pop("flash", "")
    return await asyncio.to_thread(_take_flash, request.app.state.settings, visit.digest)
