"""What the API and the pages both do for a signed-in principal: find a move they may see, show
it, start one, confirm, extend or cancel it, and show waves. Every action goes through
mailmove.service (the CLI's own path), with the principal as the actor; an error is one of
mailmove.base.errors, answered by the API as JSON and by the pages as HTML."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import Request
from pydantic import BaseModel, Field

from mailmove.base import ids
from mailmove.base.config import parse_duration
from mailmove.base.errors import BadInput, ConfigError, NotFound
from mailmove.base.inputs import DomainMoveRequest, ServerMoveRequest
from mailmove.base.model import CancelInput, ConfirmInput, ExtendInput
from mailmove.base.vocabulary import MOVE_KINDS, DnsMode, RelayScope
from mailmove.dashboard.deps import temporal
from mailmove.dashboard.principal import Principal
from mailmove.dashboard.scope import check_domain_move, check_server_move, sees
from mailmove.service import control, guard, waves


class ConfirmBody(BaseModel):
    stage: str
    note: str = ""
    lost: list[str] = Field(default=[], description="refused addresses accepted as lost")


class ExtendBody(BaseModel):
    duration: str = Field(description="e.g. 12h, 3d")
    note: str = ""


class CancelBody(BaseModel):
    note: str = ""


class DomainMoveBody(BaseModel):
    domain: str
    legacy_mx: str
    dns: str = DnsMode.RFC2136
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
    relay_scope: str = RelayScope.EXTERNAL
    institution: str = ""
    admins: list[str] = []
    contact: str = ""
    sender_domains: list[str] = []
    mail_from: str = ""
    rcpt: str = ""
    send: bool = False
    agent: bool = True
    configure_mta: bool = Field(default=False, description="the host agent sets the relay in Postfix's main.cf")
    portal: str = ""


async def visible_id(request: Request, principal: Principal, text: str) -> str:
    """The workflow id behind `text`, if this principal may see it, else NotFound as if unknown.
    The name is judged as typed, before the store is asked which kind of move it is, and the
    answer names nothing: what another department has running is not told by it."""
    kind, subject = ids.parse(text)
    if not sees(principal, subject if kind in MOVE_KINDS else text):
        raise NotFound("id", "no such migration among your domains")
    try:
        wid = await asyncio.to_thread(control.workflow_id, text, request.app.state.settings)
    except BadInput as exc:
        raise BadInput("id", exc.message) from None
    if not sees(principal, ids.parse(wid)[1]):  # the id names its domain or host
        raise NotFound("id", "no such migration among your domains")
    return wid


async def show(request: Request, principal: Principal, text: str) -> tuple[str, control.Shown]:
    """The move's workflow id and what `mailmove show` shows of it."""
    wid = await visible_id(request, principal, text)
    return wid, await control.show(await temporal(request), request.app.state.settings, wid)


async def confirm(request: Request, principal: Principal, text: str, body: ConfirmBody) -> str:
    """Confirm a waiting stage (or retry a failed one)."""
    wid = await visible_id(request, principal, text)
    return await control.confirm(
        await temporal(request), wid, ConfirmInput(body.stage, principal.name, body.note, lost=list(body.lost))
    )


async def extend(request: Request, principal: Principal, text: str, body: ExtendBody) -> str:
    wid = await visible_id(request, principal, text)
    try:
        seconds = parse_duration(body.duration, "duration")
    except ConfigError as exc:  # the parser of the configuration's durations; here the request's
        raise BadInput(exc.field, exc.message) from None
    return await control.extend(await temporal(request), wid, ExtendInput(seconds, principal.name, body.note))


async def cancel(request: Request, principal: Principal, text: str, body: CancelBody) -> str:
    wid = await visible_id(request, principal, text)
    return await control.cancel(await temporal(request), wid, CancelInput(principal.name, body.note))


async def start_domain(request: Request, principal: Principal, body: DomainMoveBody) -> str:
    """Every name checked against the operator's domains first, then validated as by the CLI,
    before anything starts (both off the event loop); the new move's workflow id."""
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


async def wave_for(request: Request, principal: Principal, id: str) -> waves.WaveView:
    """A wave with only the rows this principal may see."""
    view = await waves.show_wave(await temporal(request), request.app.state.settings, id)
    if not principal.domains:
        return view
    mine = view.only(partial(sees, principal))
    if not mine.status.rows:  # none of theirs, or not known yet: as if there were no such wave
        raise NotFound("id", "no such wave among your domains")
    return mine


async def waves_for(request: Request, principal: Principal) -> list[dict]:
    """The waves this principal may see: every one, or those holding a row of their domains."""
    return await waves.list_waves(await temporal(request), partial(sees, principal) if principal.domains else None)


class GuardBody(BaseModel):
    note: str = ""


async def guards_for(request: Request, principal: Principal) -> list[dict]:
    """The guards of the moves this principal may see."""
    rows = await asyncio.to_thread(guard.guards, request.app.state.settings)
    return [row for row in rows if sees(principal, row["subject"])]


async def guard_of(request: Request, principal: Principal, text: str, fresh: bool = True) -> guard.GuardView:
    """A finished move's guard: its drift, whether it is paused, its next run; its schedule as
    Temporal said it lately unless `fresh` (the detail's refresh), once this principal may see it."""
    wid = await visible_id(request, principal, text)
    app = request.app.state
    return await guard.show_guard(await temporal(request), app.settings, wid, app.schedules, fresh)


NOTED_ACTS = {"pause": guard.pause_guard, "resume": guard.resume_guard}


async def guard_act(request: Request, principal: Principal, text: str, act: str, body: GuardBody) -> str:
    """Run a guard now, pause or resume it (an operator's, as a move's actions are)."""
    wid = await visible_id(request, principal, text)
    client, settings = await temporal(request), request.app.state.settings
    if act == "run":
        return await guard.run_guard(client, settings, wid, principal.name)
    return await NOTED_ACTS[act](client, settings, wid, principal.name, body.note)


async def adopt(request: Request) -> list[dict]:
    """A guard for every move done (it spans every domain)."""
    return await guard.adopt(await temporal(request), request.app.state.settings)
