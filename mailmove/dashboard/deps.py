"""What a route depends on: the Temporal client and the signed-in principal, who must hold a role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from temporalio.client import Client

from mailmove.base.temporal import connect
from mailmove.dashboard.auth import check_csrf
from mailmove.dashboard.principal import Principal


async def temporal(request: Request) -> Client:
    """The client of `mailmove up`, else one connected at the first request that needs it."""
    if request.app.state.client is None:
        request.app.state.client = await connect(request.app.state.settings)
    return request.app.state.client


async def signed_in(request: Request) -> Principal | None:
    return await request.app.state.auth.who(request)


def needs(role: str, html: bool = False, everywhere: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, who must hold `role` (and, with `everywhere`, be limited to
    no domains: what the route gives spans them all); a POST must also pass the CSRF check."""

    async def dependency(request: Request) -> Principal:
        principal = await signed_in(request)
        if principal is None:
            if html:
                raise HTTPException(303, headers={"Location": f"/login?next={request.url.path}"})
            raise HTTPException(401, "not signed in: use a token (Authorization: Bearer) or log in")
        if not principal.can(role):
            raise HTTPException(403, f"role: {principal.name} is {principal.role}; this needs {role}")
        if everywhere and principal.domains:
            raise HTTPException(403, f"role: {principal.name} is limited to some domains; this spans all")
        if request.method == "POST":
            await check_csrf(request, principal)
        return principal

    return Depends(dependency)
