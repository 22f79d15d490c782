"""The telnet-style relay test: one SMTP dialogue with the gateway's relay, every reply kept.

Banner, EHLO with the server's own name, STARTTLS (TLS 1.2 or newer, SNI, certificate
verified for the relay's name), EHLO again, MAIL FROM the envelope sender, RCPT TO the test
recipient (relaying permitted proves the TSL entry), optionally DATA with the headers the
gateway insists on, QUIT. The verdict says what to do: `retry` (a 4xx, greylisting),
`unreachable`, `relay_denied` (no TSL entry yet) are worth repeating; `tls_refused`,
`certificate`, `sender_rejected` and `rejected` need a person to fix something first.

`run_relay_test` serves the host agent's activity (activities/relay_test.py), `mailmove
relay-test` and, without the envelope, the STARTTLS check of `mailmove check --server`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

import aiosmtplib

from mailmove.base.config import SmtpConfig
from mailmove.base.model import RelayTestQuery, RelayTranscript, SmtpStep, TlsSession
from mailmove.base.names import is_address
from mailmove.base.tls import tls_context
from mailmove.base.vocabulary import RelayVerdict

# verdicts that a later attempt may turn into a pass without anyone fixing anything
RETRYABLE = (RelayVerdict.RETRY, RelayVerdict.UNREACHABLE, RelayVerdict.RELAY_DENIED)

_QUEUE_ID = re.compile(r"queued as\s+([A-Za-z0-9]+)", re.I)


class Aborted(Exception):
    """The dialogue stopped at a step; the transcript says which and why."""

    def __init__(self, verdict: RelayVerdict, cause: str):
        super().__init__(cause)
        self.verdict = verdict
        self.cause = cause


def _family_matches(address: str, source: str) -> bool:
    return not source or ipaddress.ip_address(address).version == ipaddress.ip_address(source).version


def _reply_verdict(code: int, step: str) -> RelayVerdict:
    if 400 <= code < 500:
        return RelayVerdict.RETRY
    return {"mail": RelayVerdict.SENDER_REJECTED, "rcpt": RelayVerdict.RELAY_DENIED}.get(step, RelayVerdict.REJECTED)


def _cause(step: str, code: int, reply: str, query: RelayTestQuery) -> str:
    if 400 <= code < 500:
        return f"{step}: {code} {reply}: a temporary refusal (e.g. greylisting); try again later"
    if step == "mail":
        return f"the relay rejects the envelope sender {query.mail_from}: {code} {reply}; use an address that receives mail"
    if step == "rcpt":
        listed = "TrustedServerList" if query.relay.tls else "MailOut-Unsecure list"
        return (
            f"relaying denied for {query.rcpt}: {code} {reply}; the server's {listed} entry is not active yet, "
            f"or {query.source or 'this address'} is not the one filed"
        )
    return f"{step}: {code} {reply}"


def message(query: RelayTestQuery) -> bytes:
    """A test message with what the gateway requires: a correct `Date` and a unique `Message-ID`."""
    msg = EmailMessage(policy=SMTP.clone(max_line_length=998))  # headers unfolded
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid("mailmove", domain=query.helo)
    msg["From"] = query.mail_from
    msg["To"] = query.rcpt
    msg["Subject"] = f"mailmove relay test {query.probe_id}"
    msg["X-Mailmove-Probe"] = query.probe_id
    msg.set_content(
        f"This message tests relaying from {query.helo} through {query.relay}.\nProbe id: {query.probe_id}\n"
    )
    return msg.as_bytes()


class Dialogue:
    """One SMTP session that records each step as it happens."""

    def __init__(self, query: RelayTestQuery, smtp: SmtpConfig):
        self.query = query
        self.smtp = smtp
        self.steps: list[SmtpStep] = []
        self.tls: TlsSession | None = None
        self.queue_id = ""

    def record(self, step: str, sent: str, code: int | None, reply: str, ok: bool) -> None:
        self.steps.append(SmtpStep(step, sent, code, reply.strip(), ok))

    async def command(self, step: str, sent: str, call: Awaitable) -> aiosmtplib.SMTPResponse:
        """Send one command; a 4xx or 5xx reply ends the dialogue with its verdict."""
        try:
            reply = await call
        except aiosmtplib.SMTPResponseException as exc:
            self.record(step, sent, exc.code, exc.message, False)
            raise Aborted(_reply_verdict(exc.code, step), _cause(step, exc.code, exc.message, self.query)) from exc
        ok = 200 <= reply.code < 400
        self.record(step, sent, reply.code, reply.message, ok)
        if not ok:
            raise Aborted(_reply_verdict(reply.code, step), _cause(step, reply.code, reply.message, self.query))
        return reply

    async def run(self, client: aiosmtplib.SMTP) -> None:
        q = self.query
        try:
            banner = await client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            self.record("banner", "", exc.code, exc.message, False)
            raise Aborted(
                _reply_verdict(exc.code, "banner"), f"the relay greets with {exc.code} {exc.message}"
            ) from exc
        self.record("banner", "", banner.code, banner.message, True)
        await self.command("ehlo", f"EHLO {q.helo}", client.ehlo())
        if q.relay.tls:
            if not client.supports_extension("starttls"):
                self.record("starttls", "", None, "STARTTLS is not advertised", False)
                raise Aborted(
                    RelayVerdict.TLS_REFUSED, f"{q.relay.host} does not offer STARTTLS; the gateway requires TLS 1.2+"
                )
            await self.handshake(client)
            await self.command("ehlo", f"EHLO {q.helo}", client.ehlo())
        if q.envelope:
            await self.command("mail", f"MAIL FROM:<{q.mail_from}>", client.mail(q.mail_from))
            await self.command("rcpt", f"RCPT TO:<{q.rcpt}>", client.rcpt(q.rcpt))
        if q.envelope and q.send:
            reply = await self.command("data", "DATA", client.data(message(q)))
            if m := _QUEUE_ID.search(reply.message):
                self.queue_id = m.group(1)
        await self.command("quit", "QUIT", client.quit())

    async def handshake(self, client: aiosmtplib.SMTP) -> None:
        q = self.query
        context = tls_context(self.smtp.ca_file)
        try:
            reply = await client.starttls(
                server_hostname=None if is_address(q.relay.host) else q.relay.host, tls_context=context
            )
        except aiosmtplib.SMTPResponseException as exc:
            self.record("starttls", "STARTTLS", exc.code, exc.message, False)
            raise Aborted(_reply_verdict(exc.code, "starttls"), f"STARTTLS refused: {exc.code} {exc.message}") from exc
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
            reason = getattr(exc, "verify_message", None) or str(exc)
            self.record("tls", "STARTTLS", None, f"handshake failed: {reason}", False)
            if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise Aborted(
                    RelayVerdict.CERTIFICATE, f"the relay's certificate is not valid for {q.relay.host}: {reason}"
                ) from exc
            raise Aborted(RelayVerdict.TLS_REFUSED, f"no TLS 1.2 or newer with {q.relay.host}: {reason}") from exc
        self.record("starttls", "STARTTLS", reply.code, reply.message, True)
        tls = client.transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        cert = tls.getpeercert()
        subject = ", ".join("=".join(pair) for rdn in cert.get("subject", ()) for pair in rdn)
        names = ", ".join(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
        digest = hashlib.sha256(der).hexdigest().upper()
        self.tls = TlsSession(
            version=tls.version(),
            cipher=tls.cipher()[0],
            fingerprint=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
            subject=subject or names,
            not_after=cert.get("notAfter", ""),
        )
        self.record("tls", "", None, f"{self.tls.version} {self.tls.cipher}, certificate for {names or subject}", True)


async def run_relay_test(
    query: RelayTestQuery,
    smtp: SmtpConfig,
    resolve: Callable[[str], Awaitable[list[str]]],
) -> RelayTranscript:
    """The whole test against the first of the relay's addresses that answers."""
    relay = query.relay
    warnings = []
    if not relay.tls:
        warnings.append(
            f"{relay.host} relays without TLS and only to campus addresses: mail to anyone outside "
            "the university will not be delivered through it"
        )
    addresses = [relay.host] if is_address(relay.host) else await resolve(relay.host)
    addresses = [a for a in addresses if _family_matches(a, query.source)]
    errors = []
    last: Dialogue | None = None
    for address in addresses:
        dialogue = Dialogue(query, smtp)
        last = dialogue
        client = aiosmtplib.SMTP(
            hostname=address,
            port=relay.port,
            local_hostname=query.helo,
            source_address=(query.source, 0) if query.source else None,
            timeout=smtp.timeout,
            start_tls=False,
        )
        try:
            await dialogue.run(client)
        except Aborted as stop:
            client.close()
            return _transcript(query, dialogue, stop.verdict, stop.cause, warnings)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if dialogue.steps:  # the relay answered, then the connection broke
                dialogue.record("error", "", None, str(exc) or type(exc).__name__, False)
                return _transcript(query, dialogue, RelayVerdict.RETRY, f"the connection broke: {exc}", warnings)
            errors.append(f"[{address}]:{relay.port}: {exc}")
            continue
        cause = (
            f"{relay.host} accepted relaying to {query.rcpt} from {query.helo}"
            if query.envelope
            else f"{relay.host} offers STARTTLS with {dialogue.tls.version if dialogue.tls else 'no TLS'}"
        )
        if dialogue.queue_id:
            cause += f"; queued as {dialogue.queue_id}"
        return _transcript(query, dialogue, RelayVerdict.PASSED, cause, warnings)
    cause = "; ".join(errors) or f"{relay.host} has no address" + (
        f" of the family of {query.source}" if query.source else ""
    )
    empty = last or Dialogue(query, smtp)
    empty.record("connect", "", None, cause, False)
    return _transcript(query, empty, RelayVerdict.UNREACHABLE, f"could not connect to {relay}: {cause}", warnings)


def _transcript(
    query: RelayTestQuery, dialogue: Dialogue, verdict: RelayVerdict, cause: str, warnings: list[str]
) -> RelayTranscript:
    return RelayTranscript(
        relay=str(query.relay),
        source=query.source,
        verdict=verdict,
        cause=cause,
        steps=dialogue.steps,
        tls=dialogue.tls,
        queue_id=dialogue.queue_id,
        warnings=list(warnings),
    )
