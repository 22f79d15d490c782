"""Every error the dashboard answers as JSON naming the field, `{"field": ..., "message": ...}`:
mailmove's own kinds (mailmove/base/errors.py) with their HTTP status, FastAPI's request
validation (422), and Starlette's HTTP errors (401, 403, an unknown path, a body that is no JSON).
The pages show the same errors as HTML with the same status (`status_of`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailmove.base.errors import BadInput, ConfigError, Conflict, MailmoveError, NotFound

STATUS: dict[type[MailmoveError], int] = {BadInput: 422, ConfigError: 422, NotFound: 404, Conflict: 409}


def status_of(exc: MailmoveError) -> int:
    return next(STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS)


def install(app: FastAPI) -> None:
    @app.exception_handler(MailmoveError)
    async def on_error(request: Request, exc: MailmoveError) -> JSONResponse:
        return JSONResponse({"field": exc.field, "message": exc.message}, status_code=status_of(exc))

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
