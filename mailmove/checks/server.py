"""The checks of a mail server: forward-confirmed reverse DNS for each address, the banner
and STARTTLS on port 25 (TLS 1.2 or newer, a certificate valid for the name, days to expiry),
and the relay test where the host agent ran it.

The SMTP part is the relay test's dialogue without the envelope, so the two judge TLS alike.
A connection that fails is `not_tested`: a server's firewall rightly admits only the gateway.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import replace
from datetime import UTC, datetime

import dns.reversename

from mailmove.base.config import Settings
from mailmove.base.model import Relay, RelayTestQuery, RelayTranscript
from mailmove.base.report import Check, Report, ServerCheckQuery
from mailmove.base.vocabulary import Kind, RelayVerdict, Verdict
from mailmove.checks.dns import Dns
from mailmove.checks.domain import TIMEOUTS
from mailmove.checks.relay import RETRYABLE, run_relay_test


class ServerChecks:
    def __init__(self, settings: Settings, dns_: Dns):
        self.settings = settings
        self.dns = dns_

    async def run(self, query: ServerCheckQuery) -> Report:
        self.fqdn = query.fqdn
        self.report = Report(Kind.SERVER, query.fqdn, "", datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            v4, v6 = await asyncio.gather(self.dns.lookup(self.fqdn, "A"), self.dns.lookup(self.fqdn, "AAAA"))
        except TIMEOUTS as exc:
            self.add("dns.forward", "DNS", Verdict.NOT_TESTED, "no answer in time", reason=f"DNS timed out: {exc}")
            return self.report
        forward = v4 + v6
        addresses = list(query.addresses) or forward
        if not addresses:
            self.add(
                "dns.forward",
                "DNS",
                Verdict.ERROR,
                f"{self.fqdn} has no A or AAAA record",
                fix=f"register {self.fqdn} with its address in the central DNS",
            )
        for address in addresses:
            await self.fcrdns(address, forward)
        for address, dialogue in zip(
            addresses, await asyncio.gather(*(self.dialogue(a) for a in addresses)), strict=True
        ):
            self.smtp(address, dialogue)
        self.relay(query.relay_test)
        return self.report

    def add(self, id: str, group: str, verdict: Verdict, summary: str, **kw) -> None:
        self.report.checks.append(Check(id, group, verdict, summary, **kw))

    async def fcrdns(self, address: str, forward: list[str]) -> None:
        id = f"dns.fcrdns[{address}]"
        try:
            check = await self.dns.fcrdns(self.fqdn, address, forward)
        except TIMEOUTS as exc:
            self.add(id, "DNS", Verdict.NOT_TESTED, "no answer in time", reason=f"DNS timed out: {exc}")
            return
        reverse = dns.reversename.from_address(address).to_text()
        observed = [
            f"{reverse} PTR {', '.join(check.ptr) or '(none)'}",
            f"{self.fqdn}: {', '.join(forward) or 'no address'}",
        ]
        expected = [f"{reverse} PTR {self.fqdn}.", f"{self.fqdn} resolves to {address}"]
        if check.ok:
            self.add(id, "DNS", Verdict.OK, f"{address} and {self.fqdn} resolve to each other", observed=observed)
        elif self.fqdn not in check.ptr:
            self.add(
                id,
                "DNS",
                Verdict.ERROR,
                f"the PTR of {address} does not name {self.fqdn}",
                observed=observed,
                expected=expected,
                fix=f"set `{reverse} IN PTR {self.fqdn}.` in the central DNS (forward and reverse must match)",
            )
        else:
            rdtype = "AAAA" if ":" in address else "A"
            self.add(
                id,
                "DNS",
                Verdict.ERROR,
                f"{self.fqdn} does not resolve back to {address}",
                observed=observed,
                expected=expected,
                fix=f"set `{self.fqdn}. IN {rdtype} {address}` in the central DNS",
            )

    async def dialogue(self, address: str) -> RelayTranscript:
        query = RelayTestQuery(
            relay=Relay(self.fqdn, self.settings.check.smtp_port, tls=True),
            helo=self.settings.smtp.helo or "mailmove.invalid",
            mail_from="",
            rcpt="",
            envelope=False,
        )

        async def at(_host: str) -> list[str]:
            return [address]

        smtp = self.settings.smtp
        timeout = min(smtp.timeout, self.settings.check.timeout)
        return await run_relay_test(query, replace(smtp, timeout=timeout), at)

    def smtp(self, address: str, t: RelayTranscript) -> None:
        banner_id, tls_id = f"smtp.banner[{address}]", f"smtp.starttls[{address}]"
        banner = next((s for s in t.steps if s.step == "banner"), None)
        if banner is None:
            reason = f"{t.steps[-1].reply if t.steps else t.cause}; a firewall that admits only the gateway is right to"
            reason += " refuse this host"
            self.add(banner_id, "SMTP", Verdict.NOT_TESTED, "not reachable from here", reason=reason)
            self.add(tls_id, "SMTP", Verdict.NOT_TESTED, "not reachable from here", reason=reason)
            return
        line = f"{banner.code} {banner.reply}"
        if banner.code != 220:
            verdict, summary = Verdict.ERROR, f"the server greets with {banner.code}"
            fix = "let the MTA accept connections on port 25 (it greets with 220)"
        elif self.fqdn not in banner.reply.lower().split()[:1]:
            verdict, summary = Verdict.WARNING, f"the banner does not begin with {self.fqdn}"
            fix = f"set the MTA's host name to {self.fqdn} (Postfix: `myhostname = {self.fqdn}`; RFC 5321 §4.3.1)"
        else:
            verdict, summary, fix = Verdict.OK, "the banner names the server", ""
        expected = [f"220 {self.fqdn} ESMTP …"] if fix else []
        self.add(banner_id, "SMTP", verdict, summary, observed=[line], expected=expected, fix=fix)
        observed = [
            f"{s.step}: {s.code or ''} {s.reply}".replace("  ", " ") for s in t.steps if s.step in ("starttls", "tls")
        ]
        if t.passed and t.tls:
            days = int((ssl.cert_time_to_seconds(t.tls.not_after) - time.time()) // 86400)
            observed += [
                f"certificate {t.tls.subject}, valid until {t.tls.not_after} ({days} days)",
                f"SHA-256 {t.tls.fingerprint}",
            ]
            if days < self.settings.check.certificate_days:
                self.add(
                    tls_id,
                    "SMTP",
                    Verdict.WARNING,
                    f"the certificate expires in {days} days",
                    observed=observed,
                    expected=[f"more than {self.settings.check.certificate_days} days of validity"],
                    fix=f"renew the certificate of {self.fqdn} now (and reload the MTA)",
                )
            else:
                self.add(
                    tls_id,
                    "SMTP",
                    Verdict.OK,
                    f"STARTTLS with {t.tls.version}, certificate valid for {days} days",
                    observed=observed,
                )
        elif t.verdict in (RelayVerdict.TLS_REFUSED, RelayVerdict.CERTIFICATE):
            self.add(
                tls_id,
                "SMTP",
                Verdict.ERROR,
                t.cause,
                observed=observed or [f"{s.step}: {s.reply}" for s in t.steps[-2:]],
                expected=["STARTTLS offered, TLS 1.2 or newer, a certificate valid for " + self.fqdn],
                fix=(
                    f"install a certificate for {self.fqdn} from a public CA (the gateway verifies it) and enable STARTTLS"
                    if t.verdict == RelayVerdict.CERTIFICATE
                    else "enable STARTTLS with TLS 1.2 or newer (Postfix: `smtpd_tls_security_level = may`, a certificate and key)"
                ),
            )
        else:
            self.add(tls_id, "SMTP", Verdict.NOT_TESTED, "the dialogue ended early", reason=t.cause)

    def relay(self, transcript: RelayTranscript | None) -> None:
        if transcript is None:
            self.add(
                "relay.test",
                "relay",
                Verdict.NOT_TESTED,
                "runs on the server itself",
                reason="the relay test leaves from the server: `mailmove relay-test` there, or a server move's host agent",
            )
        elif transcript.passed:
            self.add(
                "relay.test",
                "relay",
                Verdict.OK,
                transcript.cause,
                observed=[f"{transcript.relay} from {transcript.source or 'the server'}"],
            )
        else:
            self.add(
                "relay.test",
                "relay",
                Verdict.WARNING if transcript.verdict in RETRYABLE else Verdict.ERROR,
                f"the relay test ended with {transcript.verdict}",
                observed=[transcript.cause],
                fix="see the relay test's transcript (`mailmove show`), fix what it names, then confirm relay_test",
            )
