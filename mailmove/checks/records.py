"""SPF, DMARC and MTA-STS records, read and parsed by checkdmarc behind a small interface.

checkdmarc is synchronous and keeps a process-wide DNS cache keyed by name only; each read
here empties it first, so a postmaster who fixes a record and checks again sees the fix, and
runs in a thread so a worker's event loop keeps beating. A DNS timeout comes back as
`timed_out`, never as a verdict on the record.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import checkdmarc.dmarc
import checkdmarc.mta_sts
import checkdmarc.spf
import checkdmarc.utils
import dns.exception
import dns.nameserver

# checkdmarc logs every unanswered resolver; the checks report it as `not_tested` instead
logging.getLogger("checkdmarc").addHandler(logging.NullHandler())

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class SpfResult:
    records: list[str] = field(default_factory=list)  # every v=spf1 TXT record found
    error: str = ""  # why the record is not usable (more than one, syntax, a loop)
    lookups: int = 0  # DNS-querying terms, includes followed (RFC 7208 §4.6.4: at most 10)
    void_lookups: int = 0  # of those, answers with no records (at most 2)
    limit_error: str = ""  # over either limit: receivers answer permerror
    includes: list[str] = field(default_factory=list)  # every include and redirect target, nested
    networks: list[str] = field(default_factory=list)  # pass-qualified ip4/ip6, nested
    warnings: list[str] = field(default_factory=list)
    timed_out: str = ""


@dataclass
class DmarcResult:
    record: str = ""
    location: str = ""  # where it was found (the domain or its organisational domain)
    error: str = ""
    policy: str = ""
    warnings: list[str] = field(default_factory=list)
    timed_out: str = ""


@dataclass
class MtaStsPolicy:
    mode: str
    max_age: int
    mx: list[str]  # the policy's MX patterns


def _timed_out(exc: BaseException) -> str:
    """The reason when `exc` (or what it wraps) is a DNS timeout, else ''."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, dns.exception.Timeout | dns.resolver.LifetimeTimeout | dns.resolver.NoNameservers):
            return f"DNS timed out: {seen}"
        wrapped = getattr(seen, "error", None)
        seen = wrapped if isinstance(wrapped, BaseException) else seen.__cause__ or seen.__context__
    return ""


def _walk(parsed: dict | None, result: SpfResult) -> None:
    if not parsed:
        return
    for term in parsed.get("mechanisms", []):
        mechanism = term.get("mechanism")
        if mechanism == "include":
            result.includes.append(term["value"].lower().rstrip("."))
            _walk(term.get("parsed"), result)
        elif mechanism in ("ip4", "ip6") and term.get("action") == "pass":
            result.networks.append(term["value"])
    redirect = parsed.get("redirect")
    if redirect:
        result.includes.append(redirect["domain"].lower().rstrip("."))
        _walk(redirect.get("parsed"), result)


def _failed(result: SpfResult | DmarcResult, exc: BaseException) -> SpfResult | DmarcResult:
    """A timeout is `timed_out` (not tested); anything else is what is wrong with the record."""
    result.timed_out = _timed_out(exc)
    result.error = "" if result.timed_out else str(exc)
    return result


LIMITS = (checkdmarc.spf.SPFTooManyDNSLookups, checkdmarc.spf.SPFTooManyVoidDNSLookups)
FAILURES = (checkdmarc.spf.SPFError, dns.exception.DNSException)


def _read_spf(domain: str, servers, timeout: float) -> SpfResult:
    checkdmarc.utils.DNS_CACHE.clear()
    result = SpfResult()
    try:
        found = checkdmarc.spf.query_spf_record(domain, nameservers=servers, timeout=timeout, retries=0)
    except checkdmarc.spf.SPFRecordNotFound as exc:
        result.timed_out = _timed_out(exc)  # else: no record, which is allowed
        return result
    except checkdmarc.spf.SPFError as exc:
        return _failed(result, exc)
    result.records = [found["record"]]
    result.warnings = list(found.get("warnings", []))
    try:
        parsed = _parse_spf(found["record"], domain, servers, timeout, strict=True)
        result.lookups, result.void_lookups = parsed["dns_lookups"], parsed["void_dns_lookups"]
    except LIMITS as exc:
        # over a limit is a verdict of its own: read the tree again without the limits for the rest
        result.limit_error = str(exc)
        result.lookups = exc.data.get("dns_lookups", 0)
        result.void_lookups = exc.data.get("void_dns_lookups", 0)
        try:
            parsed = _parse_spf(found["record"], domain, servers, timeout, strict=False)
        except LIMITS:
            return result
        except FAILURES as again:
            return _failed(result, again)
    except FAILURES as exc:
        return _failed(result, exc)
    if parsed.get("error") and not result.limit_error:
        result.error = str(parsed["error"])
    result.warnings += parsed.get("warnings", [])
    _walk(parsed["parsed"], result)
    return result


def _parse_spf(record: str, domain: str, servers, timeout: float, strict: bool) -> dict:
    return checkdmarc.spf.parse_spf_record(
        record, domain, ignore_too_many_lookups=not strict, nameservers=servers, timeout=timeout, retries=0
    )


def _read_dmarc(domain: str, servers, timeout: float) -> DmarcResult:
    checkdmarc.utils.DNS_CACHE.clear()
    result = DmarcResult()
    try:
        found = checkdmarc.dmarc.query_dmarc_record(domain, nameservers=servers, timeout=timeout, retries=0)
    except checkdmarc.dmarc.DMARCRecordNotFound as exc:
        result.timed_out = _timed_out(exc)
        return result
    except checkdmarc.dmarc.DMARCError as exc:
        return _failed(result, exc)
    result.record, result.location = found["record"], found["location"]
    result.warnings = list(found.get("warnings", []))
    try:
        parsed = checkdmarc.dmarc.parse_dmarc_record(
            found["record"], found["location"], nameservers=servers, timeout=timeout, retries=0
        )
    except (checkdmarc.dmarc.DMARCError, dns.exception.DNSException) as exc:
        return _failed(result, exc)
    result.policy = str(parsed["tags"].get("p", {}).get("value", ""))
    result.warnings += parsed.get("warnings", [])
    return result


async def read_spf(domain: str, servers: list[dns.nameserver.Nameserver], timeout: float) -> SpfResult:
    """`servers`: `Dns.nameservers()`, the configured resolvers; none: the system's."""
    return await asyncio.to_thread(_read_spf, domain, servers or None, timeout)


async def read_dmarc(domain: str, servers: list[dns.nameserver.Nameserver], timeout: float) -> DmarcResult:
    return await asyncio.to_thread(_read_dmarc, domain, servers or None, timeout)


def uncovered(networks: Iterable[str], required: Iterable[str]) -> list[str]:
    """The required networks that the pass-qualified `networks` do not cover entirely."""
    allowed: dict[int, list[Network]] = {4: [], 6: []}
    for text in networks:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue  # checkdmarc reported the syntax already
        allowed[net.version].append(net)
    merged = {v: list(ipaddress.collapse_addresses(nets)) for v, nets in allowed.items()}
    missing = []
    for text in required:
        net = ipaddress.ip_network(text, strict=False)
        if not any(net.subnet_of(have) for have in merged[net.version]):
            missing.append(text)
    return missing


def parse_mta_sts_txt(record: str) -> dict[str, str]:
    """The tags of an `_mta-sts` TXT record (`v`, `id`); raises ValueError on a bad record."""
    try:
        return dict(checkdmarc.mta_sts.parse_mta_sts_record(record)["tags"])
    except checkdmarc.mta_sts.MTASTSError as exc:
        raise ValueError(str(exc)) from exc


def parse_mta_sts_policy(text: str) -> MtaStsPolicy:
    """A fetched policy file; raises ValueError naming what is wrong."""
    try:
        policy = checkdmarc.mta_sts.parse_mta_sts_policy(text)["policy"]
    except checkdmarc.mta_sts.MTASTSError as exc:
        raise ValueError(str(exc)) from exc
    return MtaStsPolicy(mode=policy["mode"], max_age=int(policy["max_age"]), mx=list(policy.get("mx", [])))


def mx_matches(host: str, patterns: list[str]) -> bool:
    return checkdmarc.mta_sts.mx_in_mta_sts_patterns(host, patterns)
