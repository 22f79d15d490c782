"""The codec server: Temporal's documented `/encode` and `/decode` HTTP contract, so Temporal UI
and `temporal workflow show --codec-endpoint URL --codec-auth 'Bearer TOKEN'` show a move's
payloads decoded to the people who may see every move.

Decoding is for a signed-in principal without a domain limit (the codec is not told which
move a payload belongs to, so a limited operator gets nothing); encoding makes payloads that
workers and host agents accept as authorised work, so only an admin may ask for it. The
browser reaches it cross-origin from the UI: CORS answers only the configured origins, and
only JSON bodies are taken (a form post cannot reach it without a preflight).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from temporalio.api.common.v1 import Payloads

from mailmove.base.errors import ConfigError
from mailmove.base.payload_codec import ENCODING, EncryptionCodec, PlainPayloadRefused
from mailmove.base.temporal import payload_keys
from mailmove.dashboard.deps import signed_in
from mailmove.dashboard.principal import Principal

router = APIRouter(prefix="/codec", include_in_schema=False)
MAX_BODY = 8 << 20  # a page of a history's payloads; Temporal's own blob limit is 2 MB each
MAX_PAYLOADS = 2000


def cors_headers(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "")
    if not origin or origin not in request.app.state.settings.dashboard.codec_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def codec_of(request: Request) -> EncryptionCodec:
    codec = getattr(request.app.state, "codec", None)
    if codec is None:
        try:
            keys = payload_keys(request.app.state.settings)
        except ConfigError as exc:
            raise HTTPException(503, str(exc)) from None
        if not keys:
            raise HTTPException(404, "codec: payloads are not encrypted here (temporal.encryption_key_files)")
        codec = request.app.state.codec = EncryptionCodec(keys)
    return codec


async def body_of(request: Request) -> Payloads:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "content-type: the codec takes application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"body: more than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body: more than {MAX_BODY} bytes")
    try:
        payloads = Parse(bytes(body), Payloads())
    except (ParseError, UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(422, f"payloads: not Temporal's JSON form of Payloads: {str(exc)[:200]}") from None
    if len(payloads.payloads) > MAX_PAYLOADS:
        raise HTTPException(413, f"payloads: more than {MAX_PAYLOADS}")
    return payloads


async def allowed(request: Request, role: str) -> Principal:
    principal = await signed_in(request)
    if principal is None:
        raise HTTPException(401, "not signed in: use a token (Authorization: Bearer) or log in to the dashboard")
    if not principal.can(role) or principal.domains:
        raise HTTPException(403, f"role: the codec needs {role} for every domain; {principal.name} is not")
    return principal


async def answer(request: Request, role: str, decode: bool) -> Response:
    headers = cors_headers(request)
    try:
        await allowed(request, role)
        payloads = await body_of(request)
        codec = codec_of(request)
        try:
            # a payload in clear (a move begun before encryption) is shown as it is
            out = (
                [codec.unseal(p) if p.metadata.get("encoding") == ENCODING else p for p in payloads.payloads]
                if decode
                else [codec.seal(p) for p in payloads.payloads]
            )
        except PlainPayloadRefused as exc:
            raise HTTPException(422, f"payloads: refused {exc}") from None
    except HTTPException as exc:
        raise HTTPException(exc.status_code, exc.detail, headers=headers) from None
    return Response(MessageToJson(Payloads(payloads=out)), media_type="application/json", headers=headers)


@router.options("/{operation}")
async def preflight(request: Request, operation: str) -> Response:
    return Response(status_code=204 if cors_headers(request) else 403, headers=cors_headers(request))


@router.post("/decode")
async def decode(request: Request) -> Response:
    return await answer(request, "viewer", decode=True)


@router.post("/encode")
async def encode(request: Request) -> Response:
    return await answer(request, "admin", decode=False)
