"""E-mail to a move's contact through the configured relay: STARTTLS required and verified,
a `Date` and a unique `Message-ID` (the gateway's own rule), `Auto-Submitted` (RFC 3834) so
that no vacation reply answers it.

Once-only by the notice's key: the `notifications` table records what was sent, and the
Message-ID comes from the key, so a retry after a lost reply is the same message to a
receiver that deduplicates. Without `notify.sender` nothing is sent (False).
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dns import DnsActivities
from activities.heartbeat import beating
from activities.helo import helo_name
from activities.smtp_session import connected
from mailmove.base.config import Settings
from mailmove.base.model import Notice
from mailmove.base.names import is_address
from mailmove.base.tls import tls_context
from mailmove.store.db import sessions
from mailmove.store.records import notice_sent, record_notice


def compose(notice: Notice, sender: str, dashboard_url: str = "") -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"mailmove <{sender}>"
    msg["To"] = notice.to
    msg["Subject"] = notice.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(notice, sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailmove-Event"] = f"{notice.event} {notice.workflow_id}"
    link = f"\nOn the dashboard: {dashboard_url.rstrip('/')}/migrations/{notice.workflow_id}\n" if dashboard_url else ""
    msg.set_content(notice.body + link)
    return msg


def message_id(notice: Notice, sender: str) -> str:
    return f"<{notice.key}@{sender.rpartition('@')[2]}>"


class NotifyActivities:
    def __init__(self, settings: Settings, dns: DnsActivities):
        self.settings = settings
        self.dns = dns
        self.sessions = sessions(settings.database.url)

    def _sent(self, key: str) -> bool:
        with self.sessions() as session:
            return notice_sent(session, key)

    def _record(self, notice: Notice, sender: str) -> None:
        with self.sessions.begin() as session:
            record_notice(session, notice, message_id(notice, sender))

    async def _send(self, message: EmailMessage, host: str, address: str, port: int) -> None:
        """One session: STARTTLS is required and verified for the relay's name."""
        smtp = self.settings.smtp
        client = aiosmtplib.SMTP(
            hostname=address, port=port, local_hostname=await helo_name(smtp), timeout=smtp.timeout,
            start_tls=False,
        )  # fmt: skip
        async with connected(client):
            await client.starttls(server_hostname=host, tls_context=tls_context(smtp.ca_file))
            await client.send_message(message)

    @activity.defn
    @beating
    async def send_notice(self, notice: Notice) -> bool:
        """True once the relay accepted the message (now or on an earlier attempt)."""
        config = self.settings.notify
        if not config.sender:
            return False
        if await asyncio.to_thread(self._sent, notice.key):
            return True
        relay = config.relay or self.settings.gateway.relay_internal
        addresses = [relay.host] if is_address(relay.host) else await self.dns.addresses(relay.host)
        if not addresses:
            raise ApplicationError(f"the relay {relay.host} has no address")
        failures = []
        for address in addresses:
            try:
                await self._send(compose(notice, config.sender, config.dashboard_url), relay.host, address, relay.port)
                break
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise ApplicationError(f"{relay} refuses {notice.to}: {exc}", non_retryable=True) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                failures.append(f"[{address}]:{relay.port}: {exc}")
        else:
            raise ApplicationError(f"sending to {notice.to} through {relay} failed: {'; '.join(failures)}")
        await asyncio.to_thread(self._record, notice, config.sender)
        return True
