"""The report of a check run: plain dataclasses, safe in workflow code and history (their
annotations evaluated at import, as in mailmove/base/model.py, for the data converter).

A verdict is one of `ok`, `notice`, `warning`, `error` or `not_tested` (with the reason: a
DNS timeout is not a failure). Only errors make `mailmove check` exit 1 and stop a preflight.
"""

from dataclasses import asdict, dataclass, field

from mailmove.base.model import MxRecord, RelayTranscript
from mailmove.base.vocabulary import Verdict

VERDICTS = tuple(Verdict)  # in order of concern


@dataclass
class Check:
    id: str  # stable, dotted: `spf.gateway`, `smtp.starttls[127.0.0.2]`
    group: str  # what a person reads it under: MX, SPF, DMARC, MTA-STS, DANE, DNS, SMTP, relay
    verdict: str  # a Verdict
    summary: str  # one line: what was found
    observed: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    fix: str = ""  # one line in the postmaster's terms; empty when nothing is to be done
    reason: str = ""  # why it was not tested


@dataclass
class Report:
    kind: str  # domain | server
    subject: str  # the domain or the server's FQDN (A-label)
    stage: str  # before | during | after for a domain; "" for a server
    checked_at: str  # ISO 8601, UTC
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the expectations were chosen

    def with_verdict(self, *verdicts: str) -> list[Check]:
        return [c for c in self.checks if c.verdict in verdicts]

    @property
    def errors(self) -> list[Check]:
        return self.with_verdict(Verdict.ERROR)

    @property
    def worst(self) -> str:
        return max((c.verdict for c in self.checks), key=VERDICTS.index, default=Verdict.OK)

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.checks) for v in VERDICTS}

    def summary(self) -> str:
        """`2 errors, 1 warning` style, for a stage's detail line."""
        counts = self.counts()
        concerns = (Verdict.ERROR, Verdict.WARNING, Verdict.NOT_TESTED, Verdict.NOTICE)
        parts = [f"{counts[v]} {v.replace('_', ' ')}" for v in concerns if counts[v]]
        return ", ".join(parts) or "every check passed"

    def to_json(self) -> dict:
        return {**asdict(self), "worst": self.worst, "counts": self.counts()}

    @classmethod
    def from_json(cls, data: dict) -> "Report":
        checks = [Check(**c) for c in data.get("checks", [])]
        fields = {k: data[k] for k in ("kind", "subject", "stage", "checked_at") if k in data}
        return cls(**fields, checks=checks, notes=list(data.get("notes", [])))


@dataclass
class DomainCheckQuery:
    """What a domain is checked against. Empty fields take the gateway profile's values."""

    domain: str  # A-label
    stage: str = ""  # before | during | after; "" infers it from the MX set served now
    gateway_mx: list[str] = field(default_factory=list)
    gateway_preference: int = 0
    legacy_mx: str = ""  # the old server kept at a lower preference during the move
    old_mx: list[MxRecord] = field(default_factory=list)  # before: the set a move recorded


@dataclass
class ServerCheckQuery:
    fqdn: str  # A-label
    addresses: list[str] = field(default_factory=list)  # empty: what the name resolves to
    relay_test: RelayTranscript | None = None  # the host agent's latest, when a move ran one
