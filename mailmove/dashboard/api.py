"""The JSON API: the dashboard's reads and actions for the CLI and automation (OpenAPI at
/openapi.json). Errors are JSON naming the field, `{"field": ..., "message": ...}`
(mailmove/dashboard/problems.py)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from mailmove.base.errors import BadInput, NotFound
from mailmove.base.inputs import name_field, text_field
from mailmove.base.vocabulary import MoveState
from mailmove.dashboard import actions
from mailmove.dashboard.actions import CancelBody, ConfirmBody, DomainMoveBody, ExtendBody, GuardBody, ServerMoveBody
from mailmove.dashboard.auth import issue_token, list_tokens, revoke_token
from mailmove.dashboard.deps import needs
from mailmove.dashboard.listing import Filters, page_of
from mailmove.dashboard.principal import ROLES, Principal
from mailmove.service import control

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/migrations")
async def migrations(request: Request, filters: Filters = Depends(), principal: Principal = needs("viewer")) -> dict:
    """Every migration the caller may see, last changed first, 50 a page; counts per state."""
    result = await asyncio.to_thread(page_of, request.app.state.settings, principal, filters)
    return control.jsonable({**asdict(result), "filters": asdict(result.filters)})


@router.get("/migrations/{id}")
async def migration(id: str, request: Request, principal: Principal = needs("viewer")) -> dict:
    """One migration: the workflow's status (stages, waits, ETA), Temporal's view, the audit
    history, and the check reports of its preflight and done stages."""
    wid, shown = await actions.show(request, principal, id)
    return shown.json(wid)


@router.post("/migrations/{id}/confirm")
async def confirm(id: str, body: ConfirmBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Confirm a waiting stage (or retry a failed one)."""
    return {"result": await actions.confirm(request, principal, id, body)}


@router.post("/migrations/{id}/extend")
async def extend(id: str, body: ExtendBody, request: Request, principal: Principal = needs("operator")) -> dict:
    return {"result": await actions.extend(request, principal, id, body)}


@router.post("/migrations/{id}/cancel")
async def cancel(id: str, body: CancelBody, request: Request, principal: Principal = needs("operator")) -> dict:
    return {"result": await actions.cancel(request, principal, id, body)}


@router.post("/domain-moves", status_code=201)
async def domain_move(body: DomainMoveBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Start a domain move (the same checks as `mailmove domain start`)."""
    return {"id": await actions.start_domain(request, principal, body), "state": MoveState.RUNNING}


@router.post("/server-moves", status_code=201)
async def server_move(body: ServerMoveBody, request: Request, principal: Principal = needs("operator")) -> dict:
    """Start a server move (the same checks as `mailmove server start`)."""
    return {"id": await actions.start_server(request, principal, body), "state": MoveState.RUNNING}


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
        raise BadInput("role", f"{body.role!r} is not one of {', '.join(ROLES)}")
    name = text_field("name", body.name)
    domains = tuple(name_field("domains", d) for d in body.domains)
    if not name:
        raise BadInput("name", "whose token is it? (its actions are recorded under this name)")
    secret = await asyncio.to_thread(issue_token, request.app.state.settings, name, body.role, domains)
    return {"id": secret.split("_")[1], "token": secret, "name": name, "role": body.role}


@router.post("/tokens/{token_id}/revoke")
async def revoke(token_id: str, request: Request, principal: Principal = needs("admin", everywhere=True)) -> dict:
    if not await asyncio.to_thread(revoke_token, request.app.state.settings, token_id):
        raise NotFound("token_id", f"no token {token_id}")
    return {"revoked": token_id}


@router.get("/waves")
async def wave_list(request: Request, principal: Principal = needs("viewer")) -> list[dict]:
    """Every wave Temporal holds, newest first (an operator limited to some domains: the waves with their rows)."""
    return control.jsonable(await actions.waves_for(request, principal))


@router.get("/waves/{id}")
async def wave(id: str, request: Request, principal: Principal = needs("viewer")) -> dict:
    """A wave's rows and counts, and the rows that need attention (an operator sees their domains' rows)."""
    return (await actions.wave_for(request, principal, id)).json()


@router.get("/guards")
async def guard_list(request: Request, principal: Principal = needs("viewer")) -> list[dict]:
    """The guards of finished moves the caller may see, with the ids of their drifting findings."""
    return control.jsonable(await actions.guards_for(request, principal))


@router.post("/guards/adopt")
async def guard_adopt(request: Request, principal: Principal = needs("operator", everywhere=True)) -> list[dict]:
    """A guard for every move done (as `mailmove guard adopt`): idempotent."""
    return await actions.adopt(request)


@router.get("/guards/{id}")
async def guard(id: str, request: Request, principal: Principal = needs("viewer")) -> dict:
    """A guard: its drifting findings with their fixes, whether it is paused, its next run."""
    return (await actions.guard_of(request, principal, id)).json()


@router.post("/guards/{id}/run")
async def guard_run(id: str, request: Request, principal: Principal = needs("operator")) -> dict:
    return {"result": await actions.guard_act(request, principal, id, "run", GuardBody())}


@router.post("/guards/{id}/pause")
async def guard_pause(id: str, body: GuardBody, request: Request, principal: Principal = needs("operator")) -> dict:
    return {"result": await actions.guard_act(request, principal, id, "pause", body)}


@router.post("/guards/{id}/resume")
async def guard_resume(id: str, body: GuardBody, request: Request, principal: Principal = needs("operator")) -> dict:
    return {"result": await actions.guard_act(request, principal, id, "resume", body)}
