"""The JSON API: the dashboard's reads and actions for the CLI and automation (OpenAPI at
/docs). Errors are JSON naming the field: `{"field": ..., "message": ...}`."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dashboard.app import needs, temporal
from dashboard.auth import ROLES, Principal, issue_token, list_tokens, revoke_token
from dashboard.listing import Filters, page_of
from dashboard.scope import check_domain_move, check_server_move, sees
from mailmove import control, waves
from mailmove.config import ConfigError, parse_duration
from mailmove.inputs import DomainMoveRequest, FieldError, ServerMoveRequest, name_field, text_field
from workflows.model import CancelInput, ConfirmInput, ExtendInput

router = APIRouter(prefix="/api", tags=["api"])


class Problem(Exception):
    """An API error with the field it concerns."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def response(self) -> JSONResponse:
        return JSONResponse({"field": self.field, "message": self.message}, status_code=self.status)


def problem_of(exc: Exception) -> Problem:
    """FieldError → 422 (bad input); Refused → 404 for an unknown migration, else 409 (not
    possible now), its field taken from the message."""
    if isinstance(exc, (FieldError, ConfigError)):
        return Problem(422, exc.field, getattr(exc, "message", str(exc)))
    if str(exc).startswith(("no migration ", "no running migration ")):
        return Problem(404, "id", str(exc))
    field, _, message = str(exc).partition(": ")
    if not message or " " in field:
        field, message = "", str(exc)
    return Problem(409, field, message)


async def visible_id(request: Request, principal: Principal, text: str) -> str:
    """The workflow id behind `text`, if this principal may see it, else 404 as if unknown. The
    name is judged as typed, before the store is asked which kind of move it is, and the 404
    names nothing: what another department has running is not told by the answer."""
    name = text.partition(":")[2] if text.startswith((control.DOMAIN_PREFIX, control.SERVER_PREFIX)) else text
    if not sees(principal, name):
        raise Problem(404, "id", "no such migration among your domains")
    try:
        wid = await asyncio.to_thread(control.workflow_id, text, request.app.state.settings)
    except FieldError as exc:
        raise Problem(422, "id", exc.message) from None
    if not sees(principal, wid.partition(":")[2]):  # the id names its domain or host
        raise Problem(404, "id", "no such migration among your domains")
    return wid


async def act(call) -> Any:
    try:
        return await call
    except (FieldError, ConfigError, control.Refused) as exc:
        raise problem_of(exc) from None


@router.get("/migrations")
async def migrations(request: Request, filters: Filters = Depends(), principal: Principal = needs("viewer")) -> dict:
    """Every migration the caller may see, last changed first, 50 a page; counts per state."""
    result = await asyncio.to_thread(page_of, request.app.state.settings, principal, filters)
    return control.jsonable({**asdict(result), "filters": asdict(result.filters)})


@router.get("/migrations/{id}")
async def migration(id: str, request: Request, principal: Principal = needs("viewer")) -> dict:
    """One migration: the workflow's status (stages, waits, ETA), Temporal's view, the audit
    history, and the check reports of its preflight and done stages."""
    wid = await visible_id(request, principal, id)
    shown = await act(control.show(await temporal(request), request.app.state.settings, wid))
    return shown.json(wid)


class ConfirmBody(BaseModel):
    stage: str
    note: str = ""
    lost: list[str] = Field(default=[], description="refused addresses accepted as lost")


class ExtendBody(BaseModel):
    duration: str = Field(description="e.g. 12h, 3d")
    note: str = ""


class CancelBody(BaseModel):
    note: str = ""


@router.post("/migrations/{id}/confirm")
async def confirm(id: str, body: ConfirmBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Confirm a waiting stage (or retry a failed one)."""
    wid = await visible_id(request, principal, id)
    request_ = ConfirmInput(body.stage, principal.name, body.note, lost=list(body.lost))
    return {"result": await act(control.confirm(await temporal(request), wid, request_))}


@router.post("/migrations/{id}/extend")
async def extend(id: str, body: ExtendBody, request: Request, principal: Principal = needs("operator")) -> dict:
    wid = await visible_id(request, principal, id)
    try:
        seconds = parse_duration(body.duration, "duration")
    except ConfigError as exc:
        raise problem_of(exc) from None
    return {
        "result": await act(
            control.extend(await temporal(request), wid, ExtendInput(seconds, principal.name, body.note))
        )
    }


@router.post("/migrations/{id}/cancel")
async def cancel(id: str, body: CancelBody, request: Request, principal: Principal = needs("operator")) -> dict:
    wid = await visible_id(request, principal, id)
    return {"result": await act(control.cancel(await temporal(request), wid, CancelInput(principal.name, body.note)))}


class DomainMoveBody(BaseModel):
    domain: str
    legacy_mx: str
    dns: str = "rfc2136"
    portal: str = ""
    legacy_preference: int | None = None
    addresses: str = Field(default="", description="external addresses: one a line, or a virtual/aliases map")
    no_external: bool = False
    contact: str = Field(default="", description="e-mailed when a step waits for a person, is overdue, and at the end")


class ServerMoveBody(BaseModel):
    old: str
    new: str
    new_ipv4: str
    new_ipv6: str = ""
    relay_scope: str = "external"
    institution: str = ""
    admins: list[str] = []
    contact: str = ""
    sender_domains: list[str] = []
    mail_from: str = ""
    rcpt: str = ""
    send: bool = False
    agent: bool = True
    portal: str = ""


async def start_domain(request: Request, principal: Principal, body: DomainMoveBody) -> str:
    """Shared by the API and the page's form: every name checked against the operator's domains
    first, then validated as by the CLI, before anything starts (both off the event loop)."""
    settings = request.app.state.settings
    wanted = DomainMoveRequest(
        body.domain,
        body.legacy_mx,
        body.dns,
        body.portal,
        body.legacy_preference,
        principal.name,
        addresses_text=body.addresses,
        no_external=body.no_external,
        contact=body.contact,
    )
    await asyncio.to_thread(check_domain_move, settings, principal, wanted)
    move = await control.prepare_domain_move(settings, wanted)
    return await control.start_domain_move(await temporal(request), settings, move)


async def start_server(request: Request, principal: Principal, body: ServerMoveBody) -> str:
    settings = request.app.state.settings
    fields = body.model_dump()
    fields["portal_mode"] = fields.pop("portal")
    wanted = ServerMoveRequest(**fields, actor=principal.name)
    await asyncio.to_thread(check_server_move, settings, principal, wanted)
    move = await control.prepare_server_move(settings, wanted)
    return await control.start_server_move(await temporal(request), settings, move)


@router.post("/domain-moves", status_code=201)
async def domain_move(body: DomainMoveBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Start a domain move (the same checks as `mailmove domain start`)."""
    return {"id": await act(start_domain(request, principal, body)), "state": "running"}


@router.post("/server-moves", status_code=201)
async def server_move(body: ServerMoveBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Start a server move (the same checks as `mailmove server start`)."""
    return {"id": await act(start_server(request, principal, body)), "state": "running"}


class TokenBody(BaseModel):
    name: str
    role: str = "viewer"
    domains: list[str] = []


@router.get("/tokens")
async def tokens(request: Request, principal: Principal = needs("admin", everywhere=True)) -> list[dict]:
    return control.jsonable(await asyncio.to_thread(list_tokens, request.app.state.settings))


@router.post("/tokens", status_code=201)
async def new_token(body: TokenBody, request: Request, principal: Principal = needs("admin", everywhere=True)) -> dict:
    """A token for the CLI or automation; its secret is in this answer only."""
    if body.role not in ROLES:
        raise Problem(422, "role", f"{body.role!r} is not one of {', '.join(ROLES)}")
    try:
        name = text_field("name", body.name)
        domains = tuple(name_field("domains", d) for d in body.domains)
    except FieldError as exc:
        raise problem_of(exc) from None
    if not name:
        raise Problem(422, "name", "whose token is it? (its actions are recorded under this name)")
    secret = await asyncio.to_thread(issue_token, request.app.state.settings, name, body.role, domains)
    return {"id": secret.split("_")[1], "token": secret, "name": name, "role": body.role}


@router.post("/tokens/{token_id}/revoke")
async def revoke(token_id: str, request: Request, principal: Principal = needs("admin", everywhere=True)) -> dict:
    if not await asyncio.to_thread(revoke_token, request.app.state.settings, token_id):
        raise Problem(404, "token_id", f"no token {token_id}")
    return {"revoked": token_id}


def install(app) -> None:
    """Problems and request validation errors as `{"field", "message"}`."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = first.get("loc", ())[1:] if first.get("type") != "json_invalid" else ()  # not a field: a position
        field = ".".join(str(p) for p in where) or "body"
        return JSONResponse({"field": field, "message": first.get("msg", "invalid")}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # also Starlette's own: an unknown path, a body that is no JSON
    async def on_http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 303:
            return RedirectResponse(exc.headers["Location"], status_code=303)
        field = str(exc.detail).partition(":")[0] if ":" in str(exc.detail) else ""
        field = field or ("body" if exc.status_code == 400 else "")  # Starlette's: the body does not parse
        return JSONResponse(
            {"field": field, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )


async def wave_for(request: Request, principal: Principal, id: str) -> waves.WaveView:
    """A wave with only the rows this principal may see."""
    view = await act(waves.show_wave(await temporal(request), request.app.state.settings, id))
    if not principal.domains:
        return view
    mine = view.only(partial(sees, principal))
    if not mine.status.rows:  # none of theirs, or not known yet: as if there were no such wave
        raise Problem(404, "id", "no such wave among your domains")
    return mine


async def waves_for(request: Request, principal: Principal) -> list[dict]:
    """The waves this principal may see: every one, or those holding a row of their domains."""
    return await waves.list_waves(await temporal(request), partial(sees, principal) if principal.domains else None)


@router.get("/waves")
async def wave_list(request: Request, principal: Principal = needs("viewer")) -> list[dict]:
    """Every wave Temporal holds, newest first (an operator limited to some domains: the waves with their rows)."""
    return control.jsonable(await waves_for(request, principal))


@router.get("/waves/{id}")
async def wave(id: str, request: Request, principal: Principal = needs("viewer")) -> dict:
    """A wave's rows and counts, and the rows that need attention (an operator sees their domains' rows)."""
    return (await wave_for(request, principal, id)).json()
