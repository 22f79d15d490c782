"""Who is asking: API tokens (CLI, automation, the login token of `mailmove up`), a reverse
proxy's identity header (only when configured, only from the trusted proxies), or the signed
session cookie a login leaves. Roles: viewer < operator < admin; an operator may be limited
to the domains they administer, and then sees and acts on those alone.

Tokens are random, shown once, and kept only as SHA-256 digests. Every POST that rides on
the cookie must carry the session's CSRF token (form field `csrf` or header `X-CSRF-Token`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException, Request
from sqlalchemy import select

from mailmove.config import Settings
from store.db import ready
from store.models import ApiToken

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    domains: tuple[str, ...] = ()  # empty: every domain
    via: str = "session"  # session, token, proxy

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, subject: str) -> bool:
        """A domain, or a host within it."""
        return not self.domains or any(subject == d or subject.endswith("." + d) for d in self.domains)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(settings: Settings, name: str, role: str, domains: tuple[str, ...] = (), once: bool = False) -> str:
    """A new token; its secret is returned here and never again."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    token_id = secrets.token_hex(8)
    secret = f"mm_{token_id}_{secrets.token_urlsafe(32)}"
    with ready(settings.database.url).begin() as session:
        session.add(
            ApiToken(
                id=token_id,
                digest=_digest(secret),
                name=name,
                role=role,
                domains=list(domains),
                once=once,
                created_at=datetime.now(UTC),
                revoked=False,
            )
        )
    return secret


def check_token(settings: Settings, secret: str) -> Principal | None:
    parts = secret.split("_")
    if len(parts) < 3 or parts[0] != "mm":
        return None
    with ready(settings.database.url).begin() as session:
        row = session.get(ApiToken, parts[1])
        if row is None or row.revoked or not hmac.compare_digest(row.digest, _digest(secret)):
            return None
        if row.once and row.used_at is not None:
            return None
        row.used_at = datetime.now(UTC)
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
                "revoked": r.revoked,
            }
            for r in rows
        ]


def revoke_token(settings: Settings, token_id: str) -> bool:
    with ready(settings.database.url).begin() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            return False
        row.revoked = True
        return True


@dataclass
class Authenticator:
    settings: Settings

    def who(self, request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return check_token(self.settings, auth[7:].strip())
        d = self.settings.dashboard
        if d.proxy_header and request.client and request.client.host in d.trusted_proxies:
            name = request.headers.get(d.proxy_header, "").strip()
            if name:
                return Principal(name, d.roles.get(name, "viewer"), tuple(d.operator_domains.get(name, ())), "proxy")
        user = request.session.get("user")
        if user:
            return Principal(user["name"], user["role"], tuple(user.get("domains", ())), "session")
        return None


def local_path(target: str) -> str:
    """Where to go after a login: a path on this site only (never `//host` or a URL)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request, principal: Principal) -> None:
    """A token-authenticated call carries no cookie, so it cannot be forged cross-site."""
    if principal.via == "token":
        return
    expected = request.session.get("csrf", "")
    given = request.headers.get("x-csrf-token", "")
    if not given and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = str((await request.form()).get("csrf", ""))
    if not expected or not hmac.compare_digest(expected, given):
        raise HTTPException(403, "csrf: the form's CSRF token is missing or wrong; reload the page")
