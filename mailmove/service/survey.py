"""`mailmove survey`: the domains of a file or of a zone (AXFR), each classified against the
gateway's rules by mailmove/checks/survey.py, many at once; the last survey kept in the store,
and its not-yet domains written as a wave file that `mailmove wave start` takes unchanged.

Every domain is read before anything is asked: a bad line of the file is a BadInput naming it,
and nothing is surveyed.
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import dns.query
import dns.rdatatype
import dns.tsig
import dns.xfr
from temporalio.exceptions import ApplicationError

from activities.dns import DnsActivities
from mailmove.base.config import HostPort, Settings
from mailmove.base.errors import BadInput, ConfigError
from mailmove.base.inputs import name_field
from mailmove.base.names import BadName, to_alabel
from mailmove.base.vocabulary import ENDED, Kind, SurveyClass
from mailmove.checks.survey import DomainSurvey, Limits, MoveSeen, Survey, SurveyDns
from mailmove.store.db import ready
from mailmove.store.models import Survey as StoredSurvey
from mailmove.store.records import list_migrations, save_survey, survey_counts

MAX_FILE = 8 << 20  # bytes of a domain file: 20,000 names with comments fit many times over
MAX_ERRORS = 20  # bad lines listed; the count says how many more
WAVE_COLUMNS = ("domain", "legacy_mx")  # of mailmove/service/waves.py's domain rows
ADDRESS_TYPES = (dns.rdatatype.MX, dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass
class SurveyResult:
    source: str  # `file NAME` or `zone NAME`
    started_at: datetime
    domains: list[DomainSurvey] = field(default_factory=list)
    seconds: float = 0.0
    queries: int = 0  # DNS queries sent, checkdmarc's included

    def counts(self) -> dict[str, int]:
        return {c.value: sum(d.survey_class == c for d in self.domains) for c in SurveyClass}

    def wave(self) -> list[DomainSurvey]:
        """The rows of the wave file: not yet behind the gateway, with an MX record, not moving now."""
        return [
            d
            for d in self.domains
            if d.survey_class == SurveyClass.NOT_YET and d.legacy_mx and (d.move is None or d.move.state in ENDED)
        ]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "queries": self.queries,
            "counts": self.counts(),
            "domains": [d.to_json() for d in self.domains],
        }


def read_domains(path: Path, limit: int) -> list[str]:
    """The A-labels a file names, one a line (`#` starts a comment), each once, in order; every
    bad line is listed as `FILE:LINE: why` in one BadInput."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        raise BadInput("FILE", f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise BadInput("FILE", f"{path.name} is larger than {MAX_FILE >> 20} MiB: split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput("FILE", f"{path.name} is not UTF-8 text: {exc}") from None
    names: dict[str, None] = {}
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        try:
            names[to_alabel(name)] = None
        except BadName as exc:
            errors.append(f"{path.name}:{number}: {exc}")
        if len(names) > limit:
            raise BadInput("FILE", f"{path.name} names more than {limit} domains (survey.max_domains): split it")
    if errors:
        more = f"\n  and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        listed = "\n  ".join(errors[:MAX_ERRORS])
        raise BadInput("FILE", f"{len(errors)} bad line(s), nothing surveyed:\n  {listed}{more}")
    if not names:
        raise BadInput("FILE", f"{path.name} names no domain")
    return list(names)


async def zone_domains(settings: Settings, zone: str) -> list[str]:
    """Every name of `zone` that has an MX, an SPF record or an address, read by AXFR from the
    zone's primary (where its RFC 2136 updates go) with its TSIG key."""
    zone = name_field("--zone", zone)
    primary_of = DnsActivities(settings)
    try:
        keyring, keyname = primary_of.keyring(zone)
        primary = await primary_of.update_server(zone)
    except ApplicationError as exc:
        raise ConfigError("dns.tsig_keyfile" if exc.type == "Config" else "--zone", exc.message) from None
    except dns.exception.DNSException as exc:
        raise BadInput("--zone", f"the primary of {zone} (its SOA MNAME) cannot be found: {exc}") from None
    return await asyncio.to_thread(
        _transfer, primary, zone, keyring, keyname, settings.survey.transfer_timeout, settings.survey.max_domains
    )


def _transfer(primary: HostPort, zone: str, keyring, keyname: str, timeout: float, limit: int) -> list[str]:
    names: dict[str, None] = {}
    try:
        for message in dns.query.xfr(
            primary.host, zone, port=primary.port, keyring=keyring, keyname=keyname, relativize=False,
            timeout=timeout, lifetime=timeout,
        ):  # fmt: skip
            for rrset in message.answer:
                if rrset.rdtype in ADDRESS_TYPES or (
                    rrset.rdtype == dns.rdatatype.TXT and any(b"".join(r.strings).startswith(b"v=spf1") for r in rrset)
                ):
                    try:
                        names[to_alabel(rrset.name.to_text())] = None
                    except BadName:
                        continue  # `_spf`, a wildcard: not a mail domain
                    if len(names) > limit:
                        raise BadInput("--zone", f"{zone} names more than {limit} domains (survey.max_domains)")
    except dns.xfr.TransferError as exc:
        raise ConfigError(
            "dns.tsig_keyfile", f"{primary} refused the transfer of {zone} ({exc}): may key {keyname} transfer it?"
        ) from None
    except (dns.tsig.PeerError, dns.tsig.BadSignature) as exc:
        raise ConfigError("dns.tsig_keyfile", f"{primary} did not accept key {keyname}: {exc!r}") from None
    except dns.exception.Timeout:
        raise BadInput("--zone", f"the transfer of {zone} from {primary} took more than {timeout:g} s") from None
    except (dns.exception.DNSException, OSError, EOFError) as exc:
        raise BadInput("--zone", f"the transfer of {zone} from {primary} failed: {exc!r}") from None
    return list(names)


async def domains_from(settings: Settings, file: Path | None, zone: str | None) -> tuple[str, list[str]]:
    """(source, domains) of a file or a zone, never both."""
    if bool(file) == bool(zone):
        raise BadInput("FILE", "name a file of domains, or a zone with --zone, not both")
    if file:
        return f"file {file.name}", await asyncio.to_thread(read_domains, file, settings.survey.max_domains)
    return f"zone {zone}", await zone_domains(settings, zone or "")


def _moves(url: str) -> dict[str, MoveSeen]:
    """The latest domain move of each domain in the store."""
    with ready(url)() as session:
        found: dict[str, MoveSeen] = {}
        for m in list_migrations(session, Kind.DOMAIN):  # newest first
            found.setdefault(m.subject, MoveSeen(m.workflow_id, m.state, m.stage))
        return found


async def run_survey(
    settings: Settings,
    source: str,
    domains: list[str],
    concurrency: int,
    progress: Callable[[DomainSurvey], None] | None = None,
) -> SurveyResult:
    """Every domain surveyed, at most `concurrency` at once, each result to `progress` as it
    comes; the survey stored as the last one."""
    if not 1 <= concurrency <= 1000:
        raise BadInput("--concurrency", f"{concurrency} is not from 1 to 1000")
    result = SurveyResult(source, datetime.now(UTC))
    began = time.monotonic()
    moves = await asyncio.to_thread(_moves, settings.database.url)
    limits = Limits(settings.survey.rate)
    survey = Survey(settings, SurveyDns(settings, limits))
    gate = asyncio.Semaphore(concurrency)

    async def one(domain: str) -> DomainSurvey:
        async with gate:
            try:
                found = await survey.domain(domain, moves.get(domain))
            except Exception as exc:  # noqa: BLE001 - one domain's surprise is its finding, not the survey's end
                found = DomainSurvey(domain, SurveyClass.BROKEN, f"the checks failed: {type(exc).__name__}: {exc}")
        if progress:
            progress(found)
        return found

    result.domains = list(await asyncio.gather(*(one(d) for d in domains)))
    result.seconds, result.queries = time.monotonic() - began, limits.queries
    await asyncio.to_thread(_store, settings.database.url, result)
    return result


def _store(url: str, result: SurveyResult) -> None:
    stored = StoredSurvey(
        id=uuid.uuid4().hex,
        source=result.source[:300],
        started_at=result.started_at,
        finished_at=datetime.now(UTC),
        domains=len(result.domains),
    )
    rows = [(d.domain, d.survey_class.value, d.reason, d.to_json()) for d in result.domains]
    with ready(url).begin() as session:
        save_survey(session, stored, rows)


def write_wave(path: Path, result: SurveyResult) -> int:
    """The not-yet domains as a wave file (`domain,legacy_mx`); the number of rows."""
    rows = result.wave()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(WAVE_COLUMNS)
        writer.writerows((d.domain, d.legacy_mx) for d in rows)
    return len(rows)


def last_survey_counts(settings: Settings) -> dict[SurveyClass, int]:
    """Each class's count in the last survey stored (every class, zero included); empty before
    the first survey. For the campus summary of the dashboard and /metrics."""
    with ready(settings.database.url)() as session:
        counts = survey_counts(session)
    return {c: counts.get(c.value, 0) for c in SurveyClass} if counts else {}
