"""The check report as the tests read it: its JSON schema (kept in the repository) and one check
picked out by id."""

from __future__ import annotations

import json

from mailmove.base.report import Check, Report
from tests.support.paths import ROOT

SCHEMA = json.loads((ROOT / "mailmove" / "base" / "report.schema.json").read_text())


def check(report: Report, id: str) -> Check:
    found = [c for c in report.checks if c.id == id]
    assert found, f"no check {id} in {[c.id for c in report.checks]}"
    return found[0]
