"""The centre's request portal over HTTP (httpx), filed at most once per idempotency key.

The request is written to the database before it is sent and again when the portal has
answered; the same key is sent as `Idempotency-Key`, so a worker that dies between the two
writes re-sends a request that the portal recognises instead of filing a second one.

The HTTP contract (docs/portal.md): `POST {url}requests` with a JSON body
`{"kind", "subject", "values", "reference"}` answers `{"id", "status"}`;
`GET {url}requests/{id}` answers `{"id", "status"}`, where `confirmed` means registered.
"""

from __future__ import annotations

import asyncio

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import beating
from mailmove.base.config import PortalConfig
from mailmove.base.model import PortalFiling, PortalReceipt, WhitelistFiling
from mailmove.base.tls import tls_context
from mailmove.base.vocabulary import Request, RequestState
from mailmove.store.db import sessions
from mailmove.store.models import PortalRequest
from mailmove.store.records import begin_filing, mark_filed


class PortalActivities:
    def __init__(self, portal: PortalConfig, database_url: str):
        self.portal = portal
        self.sessions = sessions(database_url)
        self._pool: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """One client for the worker's life: its pool keeps the connection to the portal open
        between requests instead of a new connection (and TLS handshake) per request."""
        if self._pool is None:
            base = self.portal.url if self.portal.url.endswith("/") else self.portal.url + "/"
            self._pool = httpx.AsyncClient(
                base_url=base,
                headers={"Accept": "application/json"},
                timeout=self.portal.timeout,
                verify=tls_context(),
                # idle connections are dropped before a web server's usual 5 s keep-alive ends,
                # so a request never races the server closing its connection
                limits=httpx.Limits(keepalive_expiry=2),
            )
        return self._pool

    def _headers(self, idempotency_key: str = "") -> dict[str, str]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        # the credential is read at every request: a rotated one takes effect without a restart
        if token := self.portal.token():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _begin(self, filing: PortalFiling) -> PortalRequest:
        with self.sessions.begin() as session:
            return begin_filing(session, filing)

    def _filed(self, key: str, reference: str, status: str) -> None:
        with self.sessions.begin() as session:
            mark_filed(session, key, reference, status)

    async def _file(self, filing: PortalFiling) -> PortalReceipt:
        row = await asyncio.to_thread(self._begin, filing)
        if row.state == RequestState.FILED:
            return PortalReceipt(filing.key, row.reference, row.status)
        body = {
            "kind": filing.kind,
            "subject": filing.subject,
            "values": filing.values,
            "reference": filing.workflow_id,
        }
        try:
            response = await self.client.post("requests", json=body, headers=self._headers(filing.key))
        except httpx.HTTPError as exc:
            raise ApplicationError(f"portal unreachable: {exc!r}") from exc
        _raise_for(response)
        answer = response.json()
        await asyncio.to_thread(self._filed, filing.key, str(answer["id"]), str(answer.get("status", "")))
        return PortalReceipt(filing.key, str(answer["id"]), str(answer.get("status", "")))

    @activity.defn
    @beating
    async def file_request(self, filing: PortalFiling) -> PortalReceipt:
        return await self._file(filing)

    @activity.defn
    @beating
    async def file_whitelist(self, filing: WhitelistFiling) -> int:
        """One Whitelist entry per address, each under its own idempotency key (the filing's key
        and the address), so a retry files only what is missing."""
        for address in filing.addresses:
            entry = PortalFiling(
                f"{filing.key}:{address.lower()}",
                filing.workflow_id,
                Request.WHITELIST,
                address,
                {"domain": filing.domain},
            )
            await self._file(entry)
        return len(filing.addresses)

    @activity.defn
    @beating
    async def request_status(self, receipt: PortalReceipt) -> str:
        try:
            response = await self.client.get(f"requests/{receipt.reference}", headers=self._headers())
        except httpx.HTTPError as exc:
            raise ApplicationError(f"portal unreachable: {exc!r}") from exc
        _raise_for(response)
        return str(response.json().get("status", ""))


def _raise_for(response: httpx.Response) -> None:
    """5xx, 408 and 429 are worth a retry; any other error is the request's own fault."""
    if response.is_success:
        return
    retry = response.status_code >= 500 or response.status_code in (408, 429)
    raise ApplicationError(
        f"portal answered {response.status_code}: {response.text[:300]}",
        non_retryable=not retry,
        type="PortalRejected" if not retry else "PortalUnavailable",
    )
