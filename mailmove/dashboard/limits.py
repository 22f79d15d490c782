"""The size of a request body, bounded before it is read: FastAPI reads a whole body (and parses
it) before it asks who is calling, so without a bound anybody could make the dashboard hold any
amount of memory, signed in or not.

A body whose Content-Length is above the limit is refused at once, without reading any of it;
one sent in chunks is counted as the application reads it and refused at the chunk that crosses
the limit, after which the application reads nothing more. The refusal is 413 with
`{"field": "body", "message": ...}`. What the client still sends is drained and dropped by
uvicorn, so the memory held stays at one chunk.
"""

from __future__ import annotations

import json

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: at most `limit` bytes of body a request; `paths` maps a path prefix to a
    limit of its own (the codec endpoint takes pages of payloads)."""

    def __init__(self, app: ASGIApp, limit: int, paths: dict[str, int] | None = None):
        self.app = app
        self.limit = limit
        self.paths = paths or {}

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.paths.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or len(declared) > 15 or int(declared) > limit):
            return await refuse(send, limit)
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await refuse(send, limit)
                    return {"type": "http.disconnect"}  # the application stops reading here
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent
            started = True
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except ClientDisconnect:
            if not refused:
                raise


async def refuse(send: Send, limit: int) -> None:
    body = json.dumps({"field": "body", "message": f"larger than {limit} bytes, the most taken here"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
