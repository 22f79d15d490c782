"""The checks of a domain against the gateway's rules, for the stage a move is in.

MX plan per stage (before: the old set; during: the gateway hosts plus the legacy host at a
lower preference; after: exactly the gateway hosts), MX targets and null MX (RFC 7505), SPF
(RFC 7208: one record, its syntax, the lookup limits, the gateway covered), DMARC, MTA-STS
(RFC 8461) and DANE (RFC 7672) hazards, and the authoritative servers in agreement.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import dns.exception
import dns.resolver
import httpx
from temporalio.exceptions import ApplicationError

from mailmove.base.config import HostPort, Settings
from mailmove.base.model import MxRecord, mx_key
from mailmove.base.report import Check, DomainCheckQuery, Report
from mailmove.base.tls import tls_context
from mailmove.base.vocabulary import CheckStage, Kind, Verdict
from mailmove.checks import records
from mailmove.checks.dns import Dns

MAX_POLICY = 64 * 1024  # an RFC 8461 policy is a few lines; a larger body is not read
TIMEOUTS = (dns.exception.Timeout, dns.resolver.NoNameservers)


def _mx_lines(records_: list[MxRecord]) -> list[str]:
    return [str(r) for r in mx_key(records_)] or ["no MX"]


def is_root(host: str) -> bool:
    """The root name, as an MX exchange of RFC 7505's null MX."""
    return host in ("", ".", "@")


def is_null_mx(mx: list[MxRecord]) -> bool:
    return any(is_root(r.exchange) for r in mx)


def infer_stage(mx: list[MxRecord], gateway: list[str]) -> CheckStage:
    hosts = {r.exchange for r in mx}
    if hosts and hosts <= set(gateway):
        return CheckStage.AFTER
    return CheckStage.DURING if hosts & set(gateway) else CheckStage.BEFORE


class DomainChecks:
    """One run of every domain check; DNS through the worker's configured servers."""

    def __init__(self, settings: Settings, dns_: Dns):
        self.settings = settings
        self.dns = dns_

    async def run(self, query: DomainCheckQuery) -> Report:
        g = self.settings.gateway
        self.query = query
        self.domain = query.domain
        self.gateway = list(query.gateway_mx or g.mx)
        self.preference = query.gateway_preference or g.mx_preference
        self.report = Report(Kind.DOMAIN, query.domain, query.stage, datetime.now(UTC).isoformat(timespec="seconds"))
        self.mx: list[MxRecord] | None = None
        await self.guard("dns.zone", "DNS", self.zone)
        if self.report.checks[-1].verdict == Verdict.ERROR and self.mx is None:
            return self.report  # the name does not exist: nothing else can be said of it
        if self.mx is not None:
            if not self.report.stage:
                self.report.stage = infer_stage(self.mx, self.gateway)
                self.report.notes.append(f"stage {self.report.stage} inferred from the MX set served now")
            await self.guard("mx.plan", "MX", self.mx_plan)
            await self.guard("mx.null", "MX", self.null_mx)
            await self.guard("mx.targets", "MX", self.mx_targets)
            await self.guard("dane.tlsa", "DANE", self.dane)
            await self.guard("mta_sts.policy", "MTA-STS", self.mta_sts)
        await self.guard("spf.record", "SPF", self.spf)
        await self.guard("dmarc.record", "DMARC", self.dmarc)
        return self.report

    # -- plumbing -----------------------------------------------------------------------------

    def add(self, id: str, group: str, verdict: Verdict, summary: str, **kw) -> None:
        self.report.checks.append(Check(id, group, verdict, summary, **kw))

    async def guard(self, id: str, group: str, run: Callable[[], Awaitable[None]]) -> None:
        """A check whose DNS timed out is `not_tested` with the reason, never a failure."""
        try:
            await run()
        except TIMEOUTS as exc:
            self.add(id, group, Verdict.NOT_TESTED, "no answer in time", reason=f"DNS timed out: {exc}")

    @property
    def old_hosts(self) -> list[str]:
        """The department's own servers: what is served or recorded besides the gateway hosts."""
        hosts = {r.exchange for r in [*(self.mx or []), *self.query.old_mx]} | {self.query.legacy_mx}
        return sorted(h for h in hosts - set(self.gateway) if not is_root(h))

    # -- the checks -----------------------------------------------------------------------------

    async def zone(self) -> None:
        try:
            await self.exists()
            zone = await self.dns.zone_of(self.domain)
            servers = await self.dns.authoritative(zone)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, ApplicationError) as exc:
            self.add(
                "dns.zone",
                "DNS",
                Verdict.ERROR,
                f"{self.domain} does not resolve",
                observed=[str(exc)],
                fix=f"register {self.domain} and its name servers in the DNS before anything else",
            )
            return
        views = await asyncio.gather(*(self.server_view(s, zone) for s in servers))
        answered = [v for v in views if v[1] is not None]
        if not answered:
            raise dns.exception.Timeout(f"no authoritative server of {zone} answered")
        self.mx = answered[0][1]
        serials = {v[2] for v in answered}
        sets = {mx_key(v[1]) for v in answered}
        observed = [
            f"{server}: "
            + (f"serial {serial}, MX {', '.join(_mx_lines(mx))}" if mx is not None else f"no answer ({serial})")
            for server, mx, serial in views
        ]
        silent = [str(server) for server, mx, _ in views if mx is None]
        if len(sets) > 1:
            self.add(
                "dns.zone",
                "DNS",
                Verdict.ERROR,
                "the authoritative servers serve different MX sets",
                observed=observed,
                expected=["the same serial and MX set on every server"],
                fix=f"make the secondaries transfer zone {zone} from the primary (NOTIFY/AXFR) before changing MX",
            )
        elif len(serials) > 1:
            newest = max(serials)
            stale = [f"{s}" for s, mx, serial in views if mx is not None and serial != newest]
            self.add(
                "dns.zone",
                "DNS",
                Verdict.WARNING,
                f"{', '.join(stale)} serve{'s' if len(stale) == 1 else ''} an older serial of {zone} than {newest}",
                observed=observed,
                expected=[f"serial {newest} everywhere"],
                fix=f"check NOTIFY and zone transfers from the primary of {zone} to {', '.join(stale)}",
            )
        elif silent:
            self.add(
                "dns.zone",
                "DNS",
                Verdict.NOT_TESTED,
                f"{len(answered)} of {len(views)} authoritative servers answered",
                observed=observed,
                reason=f"no answer from {', '.join(silent)}",
            )
        else:
            self.add(
                "dns.zone",
                "DNS",
                Verdict.OK,
                f"zone {zone}: {len(views)} authoritative address{'es' if len(views) != 1 else ''} agree on serial "
                f"{serials.pop()} and the MX set",
                observed=observed,
            )

    async def exists(self) -> None:
        """Raises NXDOMAIN when the name does not exist at all (its zone's servers would say so
        for every query, which reads like silence otherwise)."""
        try:
            await self.dns.resolver().resolve(self.domain, "SOA")
        except dns.resolver.NoAnswer:
            pass  # a name inside its parent's zone
        except TIMEOUTS:
            pass  # the resolver is silent: the authoritative servers may still answer

    async def server_view(self, server: HostPort, zone: str) -> tuple[HostPort, list[MxRecord] | None, object]:
        try:
            (mx, _), (serial, _) = await asyncio.gather(
                self.dns.read_mx(server, self.domain), self.dns.read_soa(server, zone)
            )
        except (dns.exception.DNSException, OSError, ApplicationError) as exc:  # reported per server
            return server, None, str(exc) or type(exc).__name__
        return server, mx, serial

    async def mx_plan(self) -> None:
        stage, mx, pref = self.report.stage, self.mx, self.preference
        gateway = [MxRecord(pref, h) for h in self.gateway]
        served = mx_key(mx)
        if stage == CheckStage.AFTER:
            expected = _mx_lines(gateway)
            ok = served == mx_key(gateway)
            fix = f"set exactly the gateway MX records ({', '.join(expected)}) and nothing else"
        elif stage == CheckStage.DURING:
            legacy = self.query.legacy_mx
            others = [r for r in mx if r.exchange not in self.gateway]
            old = legacy or "the old server"
            expected = [*_mx_lines(gateway), f"{old} at a preference lower than {pref}"]
            ok = (
                set(gateway) <= set(mx)
                and bool(others)
                and all(r.preference < pref for r in others)
                and (not legacy or {r.exchange for r in others} == {legacy})
            )
            fix = f"keep the gateway hosts at {pref} and {old} at a lower value (e.g. {max(pref - 5, 0)}) and no other"
        else:
            if self.query.old_mx:
                expected = _mx_lines(self.query.old_mx)
                ok = served == mx_key(self.query.old_mx)
                fix = f"the MX set changed since the move recorded it: restore {', '.join(expected)} or cancel and start again"
            else:
                expected = ["the department's own servers, no gateway host yet"]
                ok = not ({r.exchange for r in mx} & set(self.gateway))
                fix = "the gateway hosts are already in the MX set: check with --stage during or after"
        self.add(
            "mx.plan",
            "MX",
            Verdict.OK if ok else Verdict.ERROR,
            f"the MX set {'matches' if ok else 'does not match'} the plan for stage {stage}",
            observed=_mx_lines(mx),
            expected=expected,
            fix="" if ok else fix,
        )

    async def null_mx(self) -> None:
        if not is_null_mx(self.mx):
            self.add("mx.null", "MX", Verdict.OK, "no null MX", observed=_mx_lines(self.mx))
            return
        alone = len(self.mx) == 1 and self.mx[0].preference == 0
        verdict = Verdict.ERROR if not alone or self.report.stage != CheckStage.BEFORE else Verdict.NOTICE
        self.add(
            "mx.null",
            "MX",
            verdict,
            "a null MX (RFC 7505): the domain declares that it accepts no mail"
            + ("" if alone else ", beside other MX records, which RFC 7505 forbids"),
            observed=_mx_lines(self.mx),
            expected=["the MX records of the stage"],
            fix="remove the `0 .` MX record; the gateway hosts receive the domain's mail",
        )

    async def mx_targets(self) -> None:
        hosts = sorted({r.exchange for r in self.mx if not is_root(r.exchange)})
        if not hosts:
            self.add("mx.targets", "MX", Verdict.OK, "no MX target to resolve")
            return
        resolved = dict(zip(hosts, await asyncio.gather(*(self.dns.resolve_host(h) for h in hosts)), strict=True))
        observed = [f"{h}: {', '.join(a) or 'no address'}" for h, (a, _) in resolved.items()]
        missing = [h for h, (a, _) in resolved.items() if not a]
        cnames = [h for h, (_, canonical) in resolved.items() if canonical.lower() != h.lower()]
        if missing:
            self.add(
                "mx.targets",
                "MX",
                Verdict.ERROR,
                f"MX target{'s' if len(missing) > 1 else ''} without an address: " + ", ".join(missing),
                observed=observed,
                expected=["an A or AAAA record for every MX target"],
                fix=f"add an A/AAAA record for {', '.join(missing)} or remove that MX record",
            )
        elif cnames:
            self.add(
                "mx.targets",
                "MX",
                Verdict.WARNING,
                f"MX target{'s' if len(cnames) > 1 else ''} {', '.join(cnames)} is an alias (CNAME)",
                observed=observed,
                expected=["MX targets with their own A/AAAA (RFC 2181 §10.3)"],
                fix=f"point the MX record at the canonical name instead of {', '.join(cnames)}",
            )
        else:
            self.add("mx.targets", "MX", Verdict.OK, "every MX target resolves", observed=observed)

    async def dane(self) -> None:
        found = {h: await self.dns.lookup(f"_25._tcp.{h}", "TLSA") for h in self.old_hosts}
        named = {h: t for h, t in found.items() if t}
        if not named:
            self.add("dane.tlsa", "DANE", Verdict.OK, "no TLSA records name the old server", observed=self.old_hosts)
            return
        hosts = ", ".join(named)
        self.add(
            "dane.tlsa",
            "DANE",
            Verdict.WARNING,
            f"DANE TLSA records pin the old server's certificate: {hosts}",
            observed=[f"_25._tcp.{h}. TLSA {t}" for h, ts in named.items() for t in ts],
            expected=["no TLSA records for a server that is leaving"],
            fix=(
                f"while {hosts} still receives mail keep its TLSA records in step with its certificate; "
                f"delete `_25._tcp.{next(iter(named))}` TLSA when it is switched off"
            ),
        )

    async def mta_sts(self) -> None:
        txts = [t.strip('"').replace('" "', "") for t in await self.dns.lookup(f"_mta-sts.{self.domain}", "TXT")]
        txts = [t for t in txts if t.lower().startswith("v=stsv1")]
        if not txts:
            self.add("mta_sts.policy", "MTA-STS", Verdict.OK, "no MTA-STS policy announced")
            return
        try:
            tags = records.parse_mta_sts_txt(txts[0])
            policy = records.parse_mta_sts_policy(await self.fetch_policy())
        except ValueError as exc:
            self.add(
                "mta_sts.policy",
                "MTA-STS",
                Verdict.WARNING,
                "an MTA-STS policy is announced but not usable",
                observed=[f"_mta-sts.{self.domain}. TXT {txts[0][:300]}", str(exc)[:300]],  # a peer's words, cut
                fix="senders may still hold an older policy: serve a valid one naming the gateway hosts, and a new id",
            )
            return
        stage = self.report.stage
        wanted = self.gateway + ([] if stage == CheckStage.AFTER else self.old_hosts)
        uncovered = [h for h in wanted if not records.mx_matches(h, policy.mx)]
        stale = [h for h in self.old_hosts if records.mx_matches(h, policy.mx)] if stage == CheckStage.AFTER else []
        observed = [
            f"_mta-sts.{self.domain}. TXT id={tags.get('id', '')}",
            f"mode {policy.mode}, max_age {policy.max_age} s ({policy.max_age / 86400:.1f} days)",
            *(f"mx: {p}" for p in policy.mx),
        ]
        if not uncovered and not stale:
            self.add(
                "mta_sts.policy",
                "MTA-STS",
                Verdict.OK,
                "the MTA-STS policy covers the stage's MX hosts",
                observed=observed,
            )
            return
        enforced = policy.mode == "enforce"
        verdict = (
            Verdict.ERROR
            if enforced and stage == CheckStage.AFTER and set(uncovered) & set(self.gateway)
            else Verdict.WARNING
        )
        if policy.mode == "none":
            verdict = Verdict.NOTICE
        days = policy.max_age / 86400
        self.add(
            "mta_sts.policy",
            "MTA-STS",
            verdict,
            f"hazard: the MTA-STS policy ({policy.mode}, max_age {days:.1f} days) "
            + (
                f"does not name {', '.join(uncovered)}"
                if uncovered
                else f"still names the old server {', '.join(stale)}"
            ),
            observed=observed,
            expected=[f"mx: {h}" for h in wanted],
            fix=(
                f"add `mx:` lines for {', '.join(self.gateway)} to the policy and change the id in "
                f"_mta-sts.{self.domain} at least max_age ({policy.max_age} s) before the MX change; "
                "senders keep a cached policy that long"
            ),
        )

    async def fetch_policy(self) -> str:
        """https://mta-sts.<domain>/.well-known/mta-sts.txt, resolved through our resolvers,
        certificate verified for that name (RFC 8461 §3.3: 200 only, no redirects); at most
        MAX_POLICY bytes within check.timeout in all, however slowly a hostile host sends. The
        bytes as sent, counted as they come: a compressed body is refused, never inflated (httpx
        would inflate any declared encoding without a bound; a policy is a few lines)."""
        host = f"mta-sts.{self.domain}"
        addresses = await self.dns.addresses(host)
        if not addresses:
            raise ValueError(f"{host} has no address")
        port = self.settings.check.mta_sts_port
        literal = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        context = tls_context(self.settings.smtp.ca_file)
        limit = self.settings.check.timeout
        body = bytearray()
        try:
            async with asyncio.timeout(limit), httpx.AsyncClient(verify=context, timeout=limit) as client:
                async with client.stream(
                    "GET",
                    f"https://{literal}:{port}/.well-known/mta-sts.txt",
                    headers={"Host": host if port == 443 else f"{host}:{port}", "Accept-Encoding": "identity"},
                    extensions={"sni_hostname": host},
                ) as reply:
                    if reply.status_code != 200:
                        raise ValueError(f"{host} answered HTTP {reply.status_code} for the policy (200 required)")
                    encoding = reply.headers.get("Content-Encoding", "")
                    if encoding.strip().lower() not in ("", "identity"):
                        raise ValueError(
                            f"{host} sends its policy with Content-Encoding {encoding[:40]!r}, "
                            "not as plain text: refused unread"
                        )
                    async for chunk in reply.aiter_raw():
                        body += chunk
                        if len(body) > MAX_POLICY:
                            raise ValueError(
                                f"{host} sends a policy of more than {MAX_POLICY} bytes (RFC 8461: a few lines)"
                            )
        except TimeoutError:
            raise ValueError(f"{host} did not send its policy within {limit:g} s") from None
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            raise ValueError(f"fetching the policy from {host} failed: {str(exc)[:200]}") from exc
        return body.decode("utf-8", "replace")

    async def spf(self) -> None:
        timeout = self.settings.dns.timeout
        spf = await records.read_spf(self.domain, self.dns.nameservers(), timeout)
        g = self.settings.gateway
        if spf.timed_out:
            for id in ("spf.record", "spf.lookups", "spf.gateway"):
                self.add(id, "SPF", Verdict.NOT_TESTED, "no answer in time", reason=spf.timed_out)
            return
        if not spf.records and not spf.error:
            self.add(
                "spf.record",
                "SPF",
                Verdict.NOTICE,
                f"{self.domain} has no SPF record (optional at the gateway)",
                expected=[f"v=spf1 include:{g.spf_include} … ~all"],
                fix=f'publish `{self.domain}. TXT "v=spf1 include:{g.spf_include} ~all"` so receivers can check the sender',
            )
            return  # the lookups and the gateway's coverage follow from a record, when there is one
        if spf.error:
            many = "multiple" in spf.error.lower()
            txt = [t for t in await self.dns.lookup(self.domain, "TXT") if "v=spf1" in t.lower()]
            self.add(
                "spf.record",
                "SPF",
                Verdict.ERROR,
                "more than one SPF record" if many else "the SPF record does not parse",
                observed=txt or spf.records,
                expected=["exactly one TXT record starting v=spf1"],
                fix=(
                    "merge the SPF records into one: receivers treat two as a permanent error (RFC 7208 §4.5)"
                    if many
                    else f"correct the SPF record: {spf.error}"
                ),
            )
            for id in ("spf.lookups", "spf.gateway"):
                self.add(id, "SPF", Verdict.NOT_TESTED, "the SPF record is not usable", reason=spf.error)
            return
        self.add("spf.record", "SPF", Verdict.OK, "one SPF record, it parses", observed=spf.records + spf.warnings)
        limits = [f"{spf.lookups} DNS lookups (at most 10)", f"{spf.void_lookups} void lookups (at most 2)"]
        if spf.limit_error:
            self.add(
                "spf.lookups",
                "SPF",
                Verdict.ERROR,
                "the SPF record exceeds RFC 7208's lookup limits: receivers answer permerror",
                observed=[spf.limit_error],
                expected=limits,
                fix="flatten includes or replace a:/mx: terms by ip4:/ip6: networks, and remove terms naming missing hosts",
            )
            self.add(
                "spf.gateway", "SPF", Verdict.NOT_TESTED, "receivers stop at the lookup limit", reason=spf.limit_error
            )
            return
        self.add(
            "spf.lookups",
            "SPF",
            Verdict.OK,
            f"{spf.lookups} of 10 DNS lookups, {spf.void_lookups} of 2 void",
            observed=limits,
        )
        include = g.spf_include.lower().rstrip(".")
        missing = [] if include in spf.includes else records.uncovered(spf.networks, g.networks)
        if not missing:
            how = f"include:{g.spf_include}" if include in spf.includes else "the gateway networks"
            self.add(
                "spf.gateway", "SPF", Verdict.OK, f"the SPF record covers the gateway ({how})", observed=spf.records
            )
            return
        verdict = Verdict.ERROR if self.report.stage == CheckStage.AFTER else Verdict.WARNING
        self.add(
            "spf.gateway",
            "SPF",
            verdict,
            "the SPF record does not cover the gateway: mail relayed through it fails SPF",
            observed=spf.records + [f"not covered: {', '.join(missing)}"],
            expected=[f"include:{g.spf_include}", f"or ip4/ip6: {', '.join(g.networks)}"],
            fix=f"add `include:{g.spf_include}` to the SPF record of {self.domain}, before the `all` term",
        )

    async def dmarc(self) -> None:
        d = await records.read_dmarc(self.domain, self.dns.nameservers(), self.settings.dns.timeout)
        if d.timed_out:
            self.add("dmarc.record", "DMARC", Verdict.NOT_TESTED, "no answer in time", reason=d.timed_out)
        elif d.error:
            self.add(
                "dmarc.record",
                "DMARC",
                Verdict.ERROR,
                "the DMARC record does not parse",
                observed=[x for x in (d.record, d.error) if x],
                expected=["one TXT record at _dmarc starting v=DMARC1"],
                fix=f"correct `_dmarc.{self.domain}`: {d.error}",
            )
        elif not d.record:
            self.add(
                "dmarc.record",
                "DMARC",
                Verdict.NOTICE,
                f"{self.domain} has no DMARC record (optional at the gateway)",
                fix=f'publish `_dmarc.{self.domain}. TXT "v=DMARC1; p=none; rua=mailto:…"` once SPF covers the gateway',
            )
        else:
            where = "" if d.location == self.domain else f" (the organisational domain {d.location})"
            self.add(
                "dmarc.record",
                "DMARC",
                Verdict.OK,
                f"DMARC policy {d.policy}{where}",
                observed=[d.record, *d.warnings],
            )
