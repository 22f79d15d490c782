"""Drift: a finding of a guard's run (a warning or an error) that the move's `done` report did
not have, or had with a milder verdict.

A finding is known by its check's id (`spf.gateway`, `smtp.starttls[127.0.0.2]`), which stays the
same from run to run; the baseline keeps each finding's verdict, so a certificate that was a
warning at `done` and has expired since is drift. A check that could not run (`not_tested`: a
timeout, a host agent that no longer polls) or a notice is no finding: it would mail the contact
about the guard's own blindness and again each time it came back. The verdict is part of the
drift's fingerprint, so a warning that turns into an error is a drift of its own, mailed again.
"""

from __future__ import annotations

import hashlib

from mailmove.base.report import Check, Report
from mailmove.base.vocabulary import Verdict

FINDINGS = (Verdict.WARNING, Verdict.ERROR)  # in order of concern


def findings(report: Report) -> dict[str, str]:
    """The report's findings, id -> verdict: what a guard compares its runs with."""
    return {c.id: c.verdict for c in sorted(report.checks, key=lambda c: c.id) if c.verdict in FINDINGS}


def _concern(verdict: str) -> int:
    return FINDINGS.index(verdict) + 1 if verdict in FINDINGS else 0


def drift(baseline: dict[str, str], report: Report) -> list[Check]:
    """The findings that are new or worse than at `done`."""
    return [c for c in report.checks if _concern(c.verdict) > _concern(baseline.get(c.id, Verdict.OK))]


def fingerprint(drifting: list[Check]) -> str:
    """Of the drifting findings' ids and verdicts (not their words: a certificate's days left
    change daily); "" without drift."""
    if not drifting:
        return ""
    return hashlib.sha256("\n".join(sorted(f"{c.id}={c.verdict}" for c in drifting)).encode()).hexdigest()


def check_name(check_id: str) -> str:
    """A check's id without the address it was run at (`smtp.starttls[127.0.0.2]` -> `smtp.starttls`):
    a metric's label."""
    return check_id.split("[", 1)[0]
