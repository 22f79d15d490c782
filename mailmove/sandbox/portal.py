"""A stand-in for the centre's request portal: a real HTTP server speaking mailmove's contract.

Requests are kept in memory; each is `received` and becomes `confirmed` once `confirm_after`
seconds have passed, as if the centre had registered it. A repeated `Idempotency-Key`
returns the first request instead of filing another one. `respond_after` delays the answer
after the request is recorded, so tests can lose the reply of a filed request; `unavailable`
answers that many filings with 503 first.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from mailmove.base.vocabulary import PORTAL_CONFIRMED, Request
from mailmove.sandbox.bind import free_port


class Filing(BaseModel):
    kind: str
    subject: str
    values: dict[str, str] = {}
    reference: str = ""


@dataclass
class Filed:
    id: str
    key: str
    filing: Filing
    at: float

    def status(self, confirm_after: float) -> str:
        return PORTAL_CONFIRMED if time.monotonic() - self.at >= confirm_after else "received"


@dataclass
class Registry:
    """What the centre knows; the gateway stand-in asks it which domains are registered."""

    confirm_after: float = 5.0
    respond_after: float = 0.0  # answer a filing this late (it is recorded at once): a lost reply
    unavailable: int = 0  # answer this many filings with 503 first, as a portal under maintenance
    requests: dict[str, Filed] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _by_key: dict[str, Filed] = field(default_factory=dict)
    _by_subject: dict[tuple[str, str], Filed] = field(default_factory=dict)  # (kind, subject): the first
    _wl_domains: set[str] = field(default_factory=set)  # domains with any Whitelist entry
    withheld: set[str] = field(default_factory=set)  # subjects the centre has not entered (yet)

    def file(self, key: str, filing: Filing) -> Filed:
        """The request filed under `key`, filing it now if there is none."""
        with self.lock:
            if key in self._by_key:
                return self._by_key[key]
            filed = Filed(f"R{next(self._ids):05d}", key, filing, time.monotonic())
            self.requests[filed.id] = self._by_key[key] = filed
            self._by_subject.setdefault((filing.kind, filing.subject.lower()), filed)
            if filing.kind == Request.WHITELIST:
                self._wl_domains.add(filing.subject.rpartition("@")[2].lower())
            return filed

    def _confirmed(self, kind: Request, subject: str) -> bool:
        filed = self._by_subject.get((kind, subject.lower()))
        if filed is None or subject.lower() in self.withheld:
            return False
        return filed.status(self.confirm_after) == PORTAL_CONFIRMED

    def accepts(self, rcpt: str) -> bool:
        """The gateway's rule for mail from outside: the domain is registered, and the address is
        on the Whitelist (a domain with no Whitelist entry at all accepts any address here, as
        the gateway did for domains moved before the Whitelist)."""
        domain = rcpt.rpartition("@")[2].lower()
        with self.lock:
            if not self._confirmed(Request.DOMAIN, domain):
                return False
            if domain not in self._wl_domains:
                return True
            return self._confirmed(Request.WHITELIST, rcpt)

    def listed(self, kind: Request, address: str) -> bool:
        """Whether a confirmed entry of `kind` (tsl, unsecure) names `address`, not withdrawn since."""
        with self.lock:
            entries = [f for f in self.requests.values() if f.status(self.confirm_after) == PORTAL_CONFIRMED]
            added = {f.filing.subject for f in entries if f.filing.kind == kind and address in _ipv4(f)}
            removed = {f.filing.subject for f in entries if f.filing.kind == f"{kind}-removal" and address in _ipv4(f)}
            return bool(added - removed)

    def registered(self, domain: str) -> bool:
        with self.lock:
            return self._confirmed(Request.DOMAIN, domain)


def _ipv4(filed: Filed) -> list[str]:
    return [a.strip() for a in filed.filing.values.get("ipv4", "").split(",")]


def app(registry: Registry) -> FastAPI:
    api = FastAPI(title="centre portal stand-in")

    def view(filed: Filed) -> dict:
        return {
            "id": filed.id,
            "status": filed.status(registry.confirm_after),
            "kind": filed.filing.kind,
            "subject": filed.filing.subject,
            "reference": filed.filing.reference,
        }

    @api.post("/requests", status_code=201)
    def file_request(filing: Filing, idempotency_key: str = Header()) -> dict:
        if registry.unavailable > 0:
            registry.unavailable -= 1
            raise HTTPException(503, "portal under maintenance")
        filed = registry.file(idempotency_key, filing)
        time.sleep(registry.respond_after)  # a sync route runs in a thread: the server goes on
        return view(filed)

    @api.get("/requests/{request_id}")
    def show(request_id: str) -> dict:
        if request_id not in registry.requests:
            raise HTTPException(404, f"no request {request_id}")
        return view(registry.requests[request_id])

    @api.get("/requests")
    def listing() -> list[dict]:
        return [view(f) for f in registry.requests.values()]

    return api


class HttpServer:
    """A stand-in's app served by uvicorn in a thread of its own, on a free loopback port."""

    def __init__(self, api: FastAPI, name: str, port: int | None = None, tls: tuple[str, str] | None = None):
        """`tls`: (certificate file, key file) to serve HTTPS instead of HTTP."""
        self.name = name
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        certfile, keyfile = tls or (None, None)
        self.server = uvicorn.Server(
            uvicorn.Config(
                api, host="127.0.0.1", port=self.port, log_level="warning", ssl_certfile=certfile, ssl_keyfile=keyfile
            )
        )
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the {self.name} stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


class PortalServer(HttpServer):
    def __init__(self, registry: Registry, port: int | None = None):
        super().__init__(app(registry), "portal", port)
        self.registry = registry
