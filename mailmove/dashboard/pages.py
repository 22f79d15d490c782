"""The pages: server-rendered, complete without JavaScript; with it, htmx refreshes the list and
the detail in place (`?partial=1` renders the fragment alone)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from mailmove.base.errors import MailmoveError, NotFound
from mailmove.base.vocabulary import (
    MOVE_KINDS,
    AddressState,
    DnsMode,
    MoveState,
    PortalMode,
    RelayScope,
    RowState,
    Stage,
    StageState,
    Verdict,
)
from mailmove.dashboard import actions
from mailmove.dashboard.actions import CancelBody, ConfirmBody, DomainMoveBody, ExtendBody, GuardBody, ServerMoveBody
from mailmove.dashboard.auth import check_token, csrf_token, local_path, principal_of, token_id_of
from mailmove.dashboard.deps import needs
from mailmove.dashboard.listing import Filters, page_of
from mailmove.dashboard.principal import Principal
from mailmove.dashboard.problems import status_of
from mailmove.dashboard.sessions import flash, flashed, sign_in, sign_out
from mailmove.service.guard import CAMPUS, campus
from mailmove.service.render import swaks

HERE = Path(__file__).parent  # templates/ and static/
HTMX = "htmx-2.0.11.min.js"  # htmx.org 2.0.11 from npm, sha256 in static/VENDORED.md
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["swaks"] = lambda transcript: swaks(transcript).plain
# the templates compare with the vocabulary's names (`StageState.WAITING`), never with literals of their own
VOCABULARY = (AddressState, DnsMode, MoveState, PortalMode, RelayScope, RowState, Stage, StageState, Verdict)
templates.env.globals |= {"MOVE_KINDS": MOVE_KINDS} | {e.__name__: e for e in VOCABULARY}


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    context |= {"principal": principal_of(request), "csrf": csrf_token(request), "htmx": HTMX}
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/login")
async def login_form(request: Request, next: str = "/", token: str = "") -> HTMLResponse:
    return render(request, "login.html", next=next, token=token, error="", oidc=bool(request.app.state.oidc))


@router.post("/login")
async def login(request: Request, token: str = Form(""), next: str = Form("/"), csrf: str = Form("")):
    if csrf != request.session.get("csrf"):
        return render(request, "login.html", 403, next=next, token="", oidc=bool(request.app.state.oidc),
                      error="csrf: reload the page and try again")  # fmt: skip
    principal = await asyncio.to_thread(check_token, request.app.state.settings, token.strip())
    if principal is None:
        return render(request, "login.html", 401, next=next, token="", oidc=bool(request.app.state.oidc),
                      error="token: unknown, revoked, expired or used up")  # fmt: skip
    await sign_in(request, principal, token_id_of(token.strip()))
    return RedirectResponse(local_path(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, principal: Principal = needs("viewer", html=True)):
    await sign_out(request)
    return RedirectResponse("/login", status_code=303)


@router.get("/")
async def listing(
    request: Request,
    filters: Filters = Depends(),
    partial: bool = False,
    principal: Principal = needs("viewer", html=True),
) -> HTMLResponse:
    settings = request.app.state.settings
    result = await asyncio.to_thread(page_of, settings, principal, filters)
    f = filters
    query = (
        "&".join(
            f"{k}={quote(str(v))}"
            for k, v in (("kind", f.kind), ("stage", f.stage), ("state", f.state), ("q", f.q))
            if v
        )
        + ("&attention=true" if f.attention else "")
        + ("&drift=true" if f.drift else "")
    )
    # the campus counts span every department: only for whom sees every domain
    summary = None if partial or principal.domains else await asyncio.to_thread(campus, settings)
    return render(
        request,
        "_table.html" if partial else "list.html",
        page=result,
        query=query,
        campus=summary,
        campus_main=CAMPUS,
    )


@router.get("/migrations/{id}")
async def detail(
    id: str,
    request: Request,
    partial: bool = False,
    principal: Principal = needs("viewer", html=True),
) -> HTMLResponse:
    try:
        wid, shown = await actions.show(request, principal, id)
    except MailmoveError as exc:
        return render(request, "error.html", status_of(exc), message=exc.message)
    guard = await _guard(request, principal, wid, fresh=not partial)
    if partial:  # the refresh leaves the flash alone
        return render(request, "_detail.html", wid=wid, shown=shown, guard=guard)
    return render(request, "detail.html", wid=wid, shown=shown, guard=guard, result=await flashed(request), error="")


async def _guard(request: Request, principal: Principal, wid: str, fresh: bool = True):
    """The move's guard, or None before it is done (or adopted). The refresh every 2 s (not
    `fresh`) shows its schedule as Temporal described it lately (service.guard.Schedules)."""
    try:
        return await actions.guard_of(request, principal, wid, fresh)
    except NotFound:
        return None


async def _after(request: Request, principal: Principal, id: str, action: Awaitable[str]):
    """The action's result shown at once on the detail page (a flash in the session, never the
    URL, so no link can put words there); an error, with its field, too: on the move's page
    only when this principal may see the move (else the error alone, as for an unknown id)."""
    try:
        result = await action
    except MailmoveError as exc:
        try:
            wid, shown = await actions.show(request, principal, id)
        except MailmoveError:
            return render(request, "error.html", status_of(exc), message=str(exc))
        guard = await _guard(request, principal, wid)
        return render(
            request, "detail.html", status_of(exc), wid=wid, shown=shown, guard=guard, result="", error=str(exc)
        )
    await flash(request, result)
    return RedirectResponse(f"/migrations/{id}", status_code=303)


@router.post("/migrations/{id}/confirm")
async def confirm_form(
    id: str,
    request: Request,
    stage: str = Form(...),
    note: str = Form(""),
    lost: str = Form(""),
    principal: Principal = needs("operator", html=True),
):
    body = ConfirmBody(stage=stage, note=note, lost=lost.replace(",", " ").split())
    return await _after(request, principal, id, actions.confirm(request, principal, id, body))


@router.post("/migrations/{id}/extend")
async def extend_form(
    id: str,
    request: Request,
    duration: str = Form(...),
    note: str = Form(""),
    principal: Principal = needs("operator", html=True),
):
    body = ExtendBody(duration=duration, note=note)
    return await _after(request, principal, id, actions.extend(request, principal, id, body))


@router.post("/migrations/{id}/cancel")
async def cancel_form(
    id: str, request: Request, note: str = Form(""), principal: Principal = needs("operator", html=True)
):
    return await _after(request, principal, id, actions.cancel(request, principal, id, CancelBody(note=note)))


@router.post("/migrations/{id}/guard/{act}")
async def guard_form(
    id: str,
    act: str,
    request: Request,
    note: str = Form(""),
    principal: Principal = needs("operator", html=True),
):
    """Run the move's guard now, pause or resume it."""
    if act not in ("run", "pause", "resume"):
        return render(request, "error.html", 404, message="no such guard action (run, pause, resume)")
    return await _after(request, principal, id, actions.guard_act(request, principal, id, act, GuardBody(note=note)))


@router.get("/start")
async def start_form(request: Request, principal: Principal = needs("operator", html=True)) -> HTMLResponse:
    return render(request, "start.html", error="", values={})


_NUMBER = re.compile(r"[0-9]{1,5}")  # a preference (0-65535): ASCII digits, so int() takes it


async def texts_of(request: Request) -> dict[str, str]:
    """A start form's text fields (a file sent in their place is left out: it is no value)."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.post("/start/domain")
async def start_domain_form(request: Request, principal: Principal = needs("operator", html=True)):
    form = await texts_of(request)
    preference = form.get("legacy_preference", "")
    body = DomainMoveBody(
        domain=form.get("domain", ""),
        legacy_mx=form.get("legacy_mx", ""),
        dns=form.get("dns", DnsMode.RFC2136),
        portal=form.get("portal", ""),
        legacy_preference=int(preference) if _NUMBER.fullmatch(preference) else None,
        addresses=form.get("addresses", ""),
        no_external=form.get("no_external") == "on",
        contact=form.get("contact", ""),
    )
    return await _started(request, form, actions.start_domain(request, principal, body))


@router.post("/start/server")
async def start_server_form(request: Request, principal: Principal = needs("operator", html=True)):
    values = await texts_of(request)
    body = ServerMoveBody(
        old=values.get("old", ""),
        new=values.get("new", ""),
        new_ipv4=values.get("new_ipv4", ""),
        new_ipv6=values.get("new_ipv6", ""),
        relay_scope=values.get("relay_scope", RelayScope.EXTERNAL),
        institution=values.get("institution", ""),
        admins=[a for a in str(values.get("admins", "")).replace(",", " ").split() if a],
        contact=values.get("contact", ""),
        sender_domains=[d for d in str(values.get("sender_domains", "")).replace(",", " ").split() if d],
        rcpt=values.get("rcpt", ""),
        agent=values.get("agent") == "on",
        configure_mta=values.get("configure_mta") == "on",
        portal=values.get("portal", ""),
    )
    return await _started(request, values, actions.start_server(request, principal, body))


async def _started(request: Request, values: dict, start: Awaitable[str]):
    try:
        wid = await start
    except MailmoveError as exc:
        return render(request, "start.html", status_of(exc), error=str(exc), values=values)
    await flash(request, "started")
    return RedirectResponse(f"/migrations/{wid}", status_code=303)


@router.get("/waves")
async def wave_list(request: Request, principal: Principal = needs("viewer", html=True)) -> HTMLResponse:
    return render(request, "waves.html", waves=await actions.waves_for(request, principal))


@router.get("/waves/{id}")
async def wave_page(
    id: str, request: Request, partial: bool = False, principal: Principal = needs("viewer", html=True)
) -> HTMLResponse:
    try:
        view = await actions.wave_for(request, principal, id)
    except MailmoveError as exc:
        return render(request, "error.html", status_of(exc), message=exc.message)
    return render(request, "_wave.html" if partial else "wave.html", view=view)
