"""Registration detection: does the gateway MX accept mail for the domain yet?

One SMTP dialogue per probe (aiosmtplib): EHLO, STARTTLS when offered (TLS 1.2 or newer,
certificate verified for the host's name), `MAIL FROM:<>`, `RCPT TO:<address>`, then QUIT
before DATA, so no message is ever sent.
"""

from __future__ import annotations

import socket
import ssl

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dns import DnsActivities
from mailmove.config import SmtpConfig
from workflows.model import ProbeQuery, ProbeResult


def tls_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ProbeActivities:
    def __init__(self, smtp: SmtpConfig, dns: DnsActivities):
        self.smtp = smtp
        self.dns = dns

    async def _rcpt(self, host: str, address: str, port: int, rcpt: str) -> ProbeResult:
        client = aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=self.smtp.helo or socket.getfqdn(),
            timeout=self.smtp.timeout,
            start_tls=False,
        )
        await client.connect()
        try:
            await client.ehlo()
            if client.supports_extension("starttls"):
                await client.starttls(server_hostname=host, tls_context=tls_context(self.smtp.ca_file))
                await client.ehlo()
            await client.mail("")
            try:
                reply = await client.rcpt(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                return ProbeResult(False, host, exc.code, exc.message)
            return ProbeResult(True, host, reply.code, reply.message)
        finally:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()

    @activity.defn
    async def probe_rcpt(self, query: ProbeQuery) -> ProbeResult:
        """The first host that answers decides; 4xx and unreachable hosts are retried later."""
        errors = []
        for host in query.hosts:
            for address in await self.dns.addresses(host):
                try:
                    result = await self._rcpt(host, address, query.port, query.rcpt)
                except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
                    errors.append(f"{host} [{address}]:{query.port}: {exc}")
                    continue
                if result.code is not None and 400 <= result.code < 500:
                    errors.append(f"{host}: {result.code} {result.message}")
                    continue
                return result
        raise ApplicationError("no gateway MX gave an answer: " + "; ".join(errors or ["no address found"]))
