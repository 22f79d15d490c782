"""A stand-in OpenID Connect provider for the dashboard's login tests: discovery, an
authorization endpoint that signs in a preset user at once, a token endpoint issuing an
RS256 ID token (joserfc) for the authorization code, and the JWKS to check it with."""

from __future__ import annotations

import base64
import secrets
import time
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Header, HTTPException
from fastapi.responses import RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

from mailmove.sandbox.portal import HttpServer


class OidcProvider(HttpServer):
    def __init__(self, client_id: str, client_secret: str, user: str):
        self.client_id, self.client_secret, self.user = client_id, client_secret, user
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"}, private=True)
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (nonce, redirect_uri)
        super().__init__(self._app(), "oidc")

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> FastAPI:
        api = FastAPI(title="OIDC provider stand-in")

        @api.get("/.well-known/openid-configuration")
        def discovery() -> dict:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }

        @api.get("/authorize")
        def authorize(client_id: str, redirect_uri: str, state: str, nonce: str = "", response_type: str = "code"):
            if client_id != self.client_id or response_type != "code":
                raise HTTPException(400, "unknown client or response type")
            code = secrets.token_urlsafe(16)
            self.codes[code] = (nonce, redirect_uri)
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

        @api.post("/token")
        def token(
            code: str = Form(...),
            redirect_uri: str = Form(...),
            client_id: str = Form(""),
            client_secret: str = Form(""),
            authorization: str = Header(""),
        ) -> dict:
            if authorization.startswith("Basic "):
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            if (client_id, client_secret) != (self.client_id, self.client_secret):
                raise HTTPException(401, "client authentication failed")
            nonce, expected = self.codes.pop(code, ("", ""))
            if redirect_uri != expected:
                raise HTTPException(400, "unknown code")
            now = int(time.time())
            claims = {"iss": self.issuer, "sub": f"id-{self.user}", "aud": self.client_id, "iat": now,
                      "exp": now + 300, "nonce": nonce, "preferred_username": self.user}  # fmt: skip
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
            return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                    "id_token": id_token}  # fmt: skip

        @api.get("/jwks")
        def jwks() -> dict:
            return {"keys": [self.key.as_dict(private=False)]}

        return api
