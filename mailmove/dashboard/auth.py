"""Who is asking: API tokens (CLI, automation, the login token of `mailmove up`), a reverse
proxy's identity header (only when configured, only when the connection itself comes from a
trusted proxy), or a session in the store that a login opened (mailmove/dashboard/sessions.py). Roles:
viewer < operator < admin; an operator may be limited to the domains they administer, and then
sees and acts on those alone.

Tokens are random, shown once, and kept only as SHA-256 digests; the one-time login tokens
expire. Every POST that rides on the cookie must carry the session's CSRF token (form field
`csrf` or header `X-CSRF-Token`), which a login makes anew.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException, Request
from sqlalchemy import delete, or_, select, update

from mailmove.base.config import Settings
from mailmove.base.errors import BadInput
from mailmove.base.inputs import text_field
from mailmove.dashboard.principal import ROLES, Principal
from mailmove.dashboard.sessions import SESSION_KEY, Visit, digest, resume, visit_of
from mailmove.store.db import ready
from mailmove.store.models import ApiToken, DashboardSession

LOGIN_TOKEN = "admin (one-time login token)"  # the name of the tokens `mailmove up` prints


def issue_token(
    settings: Settings,
    name: str,
    role: str,
    domains: tuple[str, ...] = (),
    once: bool = False,
    ttl: float | None = None,
) -> str:
    """A new token, valid for `ttl` seconds if given; its secret is returned here and never again."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    token_id = secrets.token_hex(8)
    secret = f"mm_{token_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    with ready(settings.database.url).begin() as session:
        session.add(
            ApiToken(
                id=token_id,
                digest=digest(secret),
                name=name,
                role=role,
                domains=list(domains),
                once=once,
                created_at=now,
                revoked=False,
                expires_at=None if ttl is None else now + timedelta(seconds=ttl),
            )
        )
    return secret


def issue_login_token(settings: Settings) -> str:
    """The one-time admin token of the link `mailmove up` prints, valid for
    `dashboard.login_token_ttl`; the earlier ones that nobody used are revoked, so only the
    latest link works."""
    with ready(settings.database.url).begin() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.name == LOGIN_TOKEN, ApiToken.once.is_(True), ApiToken.used_at.is_(None))
            .values(revoked=True)
        )
    return issue_token(settings, LOGIN_TOKEN, "admin", once=True, ttl=settings.dashboard.login_token_ttl)


def token_id_of(secret: str) -> str:
    """The public part of a token's secret `mm_<id>_<random>`: its row's id."""
    return secret.split("_")[1]


def check_token(settings: Settings, secret: str) -> Principal | None:
    parts = secret.split("_")
    if len(parts) < 3 or parts[0] != "mm":
        return None
    now = datetime.now(UTC)
    live = select(ApiToken).where(
        ApiToken.id == parts[1],
        ApiToken.revoked.is_(False),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
    )
    with ready(settings.database.url).begin() as session:
        row = session.scalar(live)
        if row is None or not hmac.compare_digest(row.digest, digest(secret)):
            return None
        if row.once:  # used up by whoever marks it first: two logins racing cannot both win
            taken = session.execute(
                update(ApiToken).where(ApiToken.id == row.id, ApiToken.used_at.is_(None)).values(used_at=now)
            )
            if taken.rowcount != 1:
                return None
        else:
            row.used_at = now
        return Principal(row.name, row.role, tuple(row.domains or ()), via="token")


def list_tokens(settings: Settings) -> list[dict]:
    with ready(settings.database.url)() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at))
        return [
            {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "domains": list(r.domains or ()),
                "once": r.once,
                "created_at": r.created_at,
                "used_at": r.used_at,
                "expires_at": r.expires_at,
                "revoked": r.revoked,
            }
            for r in rows
        ]


def revoke_token(settings: Settings, token_id: str) -> bool:
    """Revoked, and every session its login opened ended with it."""
    with ready(settings.database.url).begin() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            return False
        row.revoked = True
        session.execute(delete(DashboardSession).where(DashboardSession.origin == token_id))
        return True


@dataclass
class Authenticator:
    settings: Settings

    async def who(self, request: Request) -> Principal | None:
        """Looked up once a request (the store off the event loop); a session found is kept
        for the request's CSRF check and flash (`visit_of`)."""
        if not hasattr(request.state, "principal"):
            request.state.principal, request.state.visit = await self._find(request)
        return request.state.principal

    async def _find(self, request: Request) -> tuple[Principal | None, Visit | None]:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return await asyncio.to_thread(check_token, self.settings, auth[7:].strip()), None
        d = self.settings.dashboard
        # the connection's own peer: uvicorn runs without proxy_headers (serve.py), so no
        # X-Forwarded-For has rewritten it
        if d.proxy_header and request.client and request.client.host in d.trusted_proxies:
            name = request.headers.get(d.proxy_header, "").strip()
            if name and not printable(name):
                raise HTTPException(401, f"{d.proxy_header}: the proxy's user name is not one printable line")
            if name:
                return Principal(name, *d.grant(name), via="proxy"), None
        session_id = request.session.get(SESSION_KEY)
        if not session_id:
            return None, None
        polled = request.headers.get("hx-request") == "true"  # htmx only refreshes, never acts
        visit = await asyncio.to_thread(resume, self.settings, session_id, not polled)
        if visit is None:  # ended: the cookie forgets it
            del request.session[SESSION_KEY]
            return None, None
        return Principal(visit.name, visit.role, visit.domains, "session"), visit


def printable(name: str) -> bool:
    """Whether a user name from outside (a proxy's header) may be an actor in the audit and e-mail."""
    try:
        return text_field("name", name) == name
    except BadInput:
        return False


def principal_of(request: Request) -> Principal | None:
    """Whom `Authenticator.who` found in this request (None if it was not asked)."""
    return getattr(request.state, "principal", None)


def local_path(target: str) -> str:
    """Where to go after a login: a path on this site only (never `//host` or a URL)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session (made at its login); without one (the login form,
    a proxy's user), the signed cookie's, made on first use."""
    visit = visit_of(request)
    if visit is not None:
        return visit.csrf
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request, principal: Principal) -> None:
    """A token-authenticated call carries no cookie, so it cannot be forged cross-site."""
    if principal.via == "token":
        return
    expected = csrf_token(request)
    given = request.headers.get("x-csrf-token", "")
    if not given and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = str((await request.form()).get("csrf", ""))
    if not hmac.compare_digest(expected.encode(), given.encode()):  # bytes: `given` may be any text
        raise HTTPException(403, "csrf: the form's CSRF token is missing or wrong; reload the page")
