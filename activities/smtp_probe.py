"""Registration detection and Whitelist verification: does the gateway MX accept mail for the
domain, and for each of its listed addresses?

One SMTP dialogue per probe (aiosmtplib): EHLO, STARTTLS when offered (TLS 1.2 or newer,
certificate verified for the host's name), `MAIL FROM:<>`, `RCPT TO:<address>`, then QUIT
before DATA, so no message is ever sent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dns import DnsActivities
from activities.heartbeat import beating
from activities.helo import helo_name
from activities.smtp_session import connected
from mailmove.base.config import SmtpConfig
from mailmove.base.model import AddressProbe, AddressReport, AddressVerdict, ProbeQuery, ProbeResult
from mailmove.base.tls import tls_context
from mailmove.base.vocabulary import AddressState

T = TypeVar("T")


class ProbeActivities:
    def __init__(self, smtp: SmtpConfig, dns: DnsActivities):
        self.smtp = smtp
        self.dns = dns

    @asynccontextmanager
    async def session(self, host: str, address: str, port: int) -> AsyncIterator[aiosmtplib.SMTP]:
        """Connected, EHLO, STARTTLS when offered (verified for `host`), `MAIL FROM:<>`; QUIT after."""
        client = aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=await helo_name(self.smtp),
            timeout=self.smtp.timeout,
            start_tls=False,
        )
        async with connected(client):
            await client.ehlo()
            if client.supports_extension("starttls"):
                await client.starttls(server_hostname=host, tls_context=tls_context(self.smtp.ca_file))
                await client.ehlo()
            await client.mail("")
            yield client

    async def _rcpt(self, host: str, address: str, port: int, rcpt: str) -> ProbeResult:
        async with self.session(host, address, port) as client:
            try:
                reply = await client.rcpt(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                return ProbeResult(False, host, exc.code, exc.message)
            return ProbeResult(True, host, reply.code, reply.message)

    async def _many(self, host: str, address: str, query: AddressProbe) -> list[AddressVerdict]:
        """Every address over one connection, at most `query.rate` RCPTs a second; a new
        transaction (RSET, MAIL FROM) every `query.batch` recipients, as servers cap them."""
        verdicts = []
        interval = 1.0 / query.rate
        async with self.session(host, address, query.port) as client:
            due = time.monotonic()
            for index, rcpt in enumerate(query.addresses):
                if index and index % query.batch == 0:
                    await client.rset()
                    await client.mail("")
                # spaced from the previous RCPT, never from a schedule: a stall is not made up by a burst
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due = max(due, time.monotonic()) + interval
                try:
                    reply = await client.rcpt(rcpt)
                    verdicts.append(AddressVerdict(rcpt, AddressState.ACCEPTED, reply.code, reply.message))
                except aiosmtplib.SMTPRecipientRefused as exc:
                    state = AddressState.DEFERRED if 400 <= exc.code < 500 else AddressState.REFUSED
                    verdicts.append(AddressVerdict(rcpt, state, exc.code, exc.message))
        return verdicts

    async def _first_answer(self, hosts: list[str], port: int, ask: Callable[[str, str], Awaitable[T]]) -> T:
        """`ask(host, address)` of each gateway MX address in turn until one answers; a broken
        connection or a temporary refusal (`_Later`) moves on to the next."""
        errors = []
        for host in hosts:
            for address in await self.dns.addresses(host):
                try:
                    return await ask(host, address)
                except _Later as exc:
                    errors.append(f"{host}: {exc}")
                except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
                    errors.append(f"{host} [{address}]:{port}: {exc}")
        raise ApplicationError("no gateway MX gave an answer: " + "; ".join(errors or ["no address found"]))

    @activity.defn
    @beating
    async def probe_addresses(self, query: AddressProbe) -> AddressReport:
        """The first gateway MX that answers checks every address (quitting before DATA)."""

        async def ask(host: str, address: str) -> AddressReport:
            return AddressReport(host, await self._many(host, address, query))

        return await self._first_answer(query.hosts, query.port, ask)

    @activity.defn
    @beating
    async def probe_rcpt(self, query: ProbeQuery) -> ProbeResult:
        """The first host that answers decides; 4xx and unreachable hosts are retried later."""

        async def ask(host: str, address: str) -> ProbeResult:
            result = await self._rcpt(host, address, query.port, query.rcpt)
            if result.code is not None and 400 <= result.code < 500:
                raise _Later(f"{result.code} {result.message}")
            return result

        return await self._first_answer(query.hosts, query.port, ask)


class _Later(Exception):
    """A temporary refusal (4xx): ask the next host, or later."""
