"""OIDC login (authlib), for production: the authorization code flow against the configured
issuer, the ID token checked (signature by the issuer's JWKS, audience, nonce, expiry). The
user's name is the configured claim; the role and domains come from `dashboard.roles` and
`dashboard.operator_domains` (default: viewer), read again at each request of the session the
login opens (mailmove/dashboard/sessions.py)."""

from __future__ import annotations

import warnings

from authlib.deprecate import AuthlibDeprecationWarning  # which sets its filter to "always"
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse

from mailmove.base.config import Settings
from mailmove.dashboard.auth import local_path, printable
from mailmove.dashboard.principal import Principal
from mailmove.dashboard.sessions import OIDC, sign_in

# authlib's notice about its own httpx module is not the postmaster's to act on
warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
from authlib.integrations.starlette_client import OAuth, OAuthError  # noqa: E402

router = APIRouter(include_in_schema=False)


def client_for(settings: Settings):
    d = settings.dashboard
    oauth = OAuth()
    oauth.register(
        "oidc",
        server_metadata_url=d.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_id=d.oidc_client_id,
        client_secret=d.oidc_secret(),
        client_kwargs={"scope": "openid profile email"},
    )
    return oauth.oidc


@router.get("/login/oidc")
async def oidc_login(request: Request, next: str = "/"):
    settings: Settings = request.app.state.settings
    if not settings.dashboard.oidc_issuer:
        raise HTTPException(404, "oidc: no issuer is configured (dashboard.oidc_issuer)")
    request.session["next"] = local_path(next)
    return await request.app.state.oidc.authorize_redirect(request, str(request.url_for("oidc_callback")))


@router.get("/login/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request):
    settings: Settings = request.app.state.settings
    if request.app.state.oidc is None:
        raise HTTPException(404, "oidc: no issuer is configured (dashboard.oidc_issuer)")
    try:
        token = await request.app.state.oidc.authorize_access_token(request)
    except OAuthError as exc:
        raise HTTPException(401, f"oidc: the login failed: {exc.error} {exc.description or ''}".strip()) from None
    claims = token.get("userinfo") or {}
    name = str(claims.get(settings.dashboard.oidc_name_claim) or claims.get("sub") or "")
    name = name.strip()
    if not printable(name):  # the actor of the audit and of e-mails, as a proxy's user is
        raise HTTPException(401, "oidc: the ID token's user name is not one printable line")
    if not name:
        raise HTTPException(401, "oidc: the ID token names no user")
    target = request.session.pop("next", "/")
    await sign_in(request, Principal(name, *settings.dashboard.grant(name)), OIDC)
    return RedirectResponse(target, status_code=303)
