"""The pages: server-rendered, complete without JavaScript; with it, htmx refreshes the list and
the detail in place (`?partial=1` renders the fragment alone)."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from dashboard.api import (
    CancelBody,
    ConfirmBody,
    DomainMoveBody,
    ExtendBody,
    Problem,
    ServerMoveBody,
    act,
    cancel,
    confirm,
    extend,
    start_domain,
    start_server,
    visible_id,
    wave_for,
    waves_for,
)
from dashboard.app import HERE, HTMX, needs, temporal
from dashboard.auth import Principal, check_token, csrf_token, local_path, principal_of, token_id_of
from dashboard.listing import Filters, page_of
from dashboard.sessions import flash, flashed, sign_in, sign_out
from mailmove import control
from mailmove.render import swaks
from workflows.model import DOMAIN_STAGES, SERVER_STAGES, MoveState

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["swaks"] = lambda transcript: swaks(transcript).plain
STATES = [s.value for s in MoveState]


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
    result = await asyncio.to_thread(page_of, request.app.state.settings, principal, filters)
    f = filters
    query = "&".join(
        f"{k}={quote(str(v))}" for k, v in (("kind", f.kind), ("stage", f.stage), ("state", f.state), ("q", f.q)) if v
    ) + ("&attention=true" if f.attention else "")
    return render(
        request,
        "_table.html" if partial else "list.html",
        page=result,
        query=query,
        stages=sorted(set(DOMAIN_STAGES) | set(SERVER_STAGES)),
        states=STATES,
    )


@router.get("/migrations/{id}")
async def detail(
    id: str,
    request: Request,
    partial: bool = False,
    principal: Principal = needs("viewer", html=True),
) -> HTMLResponse:
    try:
        wid = await visible_id(request, principal, id)
        shown = await act(control.show(await temporal(request), request.app.state.settings, wid))
    except Problem as exc:
        return render(request, "error.html", exc.status, message=exc.message)
    if partial:  # the refresh leaves the flash alone
        return render(request, "_detail.html", wid=wid, shown=shown)
    return render(request, "detail.html", wid=wid, shown=shown, result=await flashed(request), error="")


async def _after(request: Request, principal: Principal, wid: str, call) -> HTMLResponse | RedirectResponse:
    """The action's result shown at once on the detail page (a flash in the session, never the
    URL, so no link can put words there); an error, with its field, too: on the move's page
    only when this principal may see the move (else the error alone, as for an unknown id)."""
    try:
        result = await call
    except Problem as exc:
        error = f"{exc.field}: {exc.message}" if exc.field else exc.message
        try:
            wid = await visible_id(request, principal, wid)
            shown = await act(control.show(await temporal(request), request.app.state.settings, wid))
        except Problem:
            return render(request, "error.html", exc.status, message=error)
        return render(request, "detail.html", exc.status, wid=wid, shown=shown, result="", error=error)
    await flash(request, result["result"])
    return RedirectResponse(f"/migrations/{wid}", status_code=303)


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
    return await _after(request, principal, id, confirm(id, body, request, principal))


@router.post("/migrations/{id}/extend")
async def extend_form(
    id: str,
    request: Request,
    duration: str = Form(...),
    note: str = Form(""),
    principal: Principal = needs("operator", html=True),
):
    return await _after(
        request, principal, id, extend(id, ExtendBody(duration=duration, note=note), request, principal)
    )


@router.post("/migrations/{id}/cancel")
async def cancel_form(
    id: str, request: Request, note: str = Form(""), principal: Principal = needs("operator", html=True)
):
    return await _after(request, principal, id, cancel(id, CancelBody(note=note), request, principal))


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
        dns=form.get("dns", "rfc2136"),
        portal=form.get("portal", ""),
        legacy_preference=int(preference) if _NUMBER.fullmatch(preference) else None,
        addresses=form.get("addresses", ""),
        no_external=form.get("no_external") == "on",
        contact=form.get("contact", ""),
    )
    return await _started(request, form, act(start_domain(request, principal, body)))


@router.post("/start/server")
async def start_server_form(request: Request, principal: Principal = needs("operator", html=True)):
    values = await texts_of(request)
    body = ServerMoveBody(
        old=values.get("old", ""),
        new=values.get("new", ""),
        new_ipv4=values.get("new_ipv4", ""),
        new_ipv6=values.get("new_ipv6", ""),
        relay_scope=values.get("relay_scope", "external"),
        institution=values.get("institution", ""),
        admins=[a for a in str(values.get("admins", "")).replace(",", " ").split() if a],
        contact=values.get("contact", ""),
        sender_domains=[d for d in str(values.get("sender_domains", "")).replace(",", " ").split() if d],
        rcpt=values.get("rcpt", ""),
        agent=values.get("agent") == "on",
        portal=values.get("portal", ""),
    )
    return await _started(request, values, act(start_server(request, principal, body)))


async def _started(request: Request, values: dict, call):
    try:
        wid = await call
    except Problem as exc:
        error = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return render(request, "start.html", exc.status, error=error, values=values)
    await flash(request, "started")
    return RedirectResponse(f"/migrations/{wid}", status_code=303)


@router.get("/waves")
async def wave_list(request: Request, principal: Principal = needs("viewer", html=True)) -> HTMLResponse:
    return render(request, "waves.html", waves=await waves_for(request, principal))


@router.get("/waves/{id}")
async def wave_page(
    id: str, request: Request, partial: bool = False, principal: Principal = needs("viewer", html=True)
) -> HTMLResponse:
    try:
        view = await wave_for(request, principal, id)
    except Problem as exc:
        return render(request, "error.html", exc.status, message=exc.message)
    return render(request, "_wave.html" if partial else "wave.html", view=view)
