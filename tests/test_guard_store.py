"""The guard's judging and its row, without Temporal: drift against the `done` report's findings,
the fingerprint of ids and verdicts (not words), the row made once and begun anew when the subject
is moved again, and a drift's mail named by the drift (SQLite)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mailmove.base.report import Check, Report
from mailmove.checks.drift import check_name, drift, findings, fingerprint
from mailmove.store.db import sessions, upgrade
from mailmove.store.guards import add_guard, mark_mailed, record_drift
from mailmove.store.models import Guard

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
WID = "domain-move:chem.example.org"
SPF = Check("spf.gateway", "SPF", "error", "the gateway is not covered", fix="add include:_spf.example.org")
CHECKS = {"workflow_id": WID, "contact": "postmaster@chem.example.org"}  # what the done path knew
CERT = Check("smtp.starttls[192.0.2.2]", "SMTP", "warning", "the certificate expires in 9 days", fix="renew")


def report(*checks: Check) -> Report:
    return Report("domain", "chem.example.org", "after", T0.isoformat(), [Check("mx.plan", "MX", "ok", "ok"), *checks])


def test_drift_is_what_the_done_report_did_not_find() -> None:
    assert findings(report(SPF)) == {"spf.gateway": "error"}
    assert drift({"spf.gateway": "error"}, report(SPF, CERT)) == [CERT]
    assert drift({}, report()) == [] and fingerprint([]) == ""
    later = replace(CERT, summary="the certificate expires in 8 days")
    assert fingerprint([CERT]) == fingerprint([later])  # the words change daily, the drift does not
    assert fingerprint([CERT]) != fingerprint([replace(CERT, verdict="error")])  # a worse verdict is news
    assert check_name(CERT.id) == "smtp.starttls"


def test_a_finding_grown_worse_is_drift_and_a_check_not_run_is_none() -> None:
    expired = replace(CERT, verdict="error", summary="the certificate has expired")
    assert drift(findings(report(CERT)), report(expired)) == [expired]  # a warning at `done`, an error now
    assert drift(findings(report(expired)), report(CERT)) == []  # milder than at `done`: no news
    blind = Check("relay.test", "relay", "not_tested", "no host agent polls", reason="nobody polls")
    noted = Check("mta_sts.record", "MTA-STS", "notice", "no MTA-STS policy")
    assert findings(report(blind, noted)) == {} and drift({}, report(blind, noted)) == []


def test_the_row_is_made_once_and_anew_after_another_move(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    upgrade(url)
    with sessions(url).begin() as session:
        add_guard(session, WID, "guard:" + WID, "domain", "chem.example.org", CHECKS, {"spf.gateway": "error"}, T0, T0)
    with sessions(url).begin() as session:
        row = session.get(Guard, WID)
        record_drift(session, row, [CERT], fingerprint([CERT]), T0 + timedelta(days=1))
        mark_mailed(session, WID, fingerprint([CERT]))
        again = add_guard(
            session, WID, "guard:" + WID, "domain", "chem.example.org", {}, {}, T0, T0 + timedelta(days=2)
        )  # a retry, or `guard adopt` knowing less of the move (no contact): all kept
        assert (again.baseline, again.mailed, again.input) == ({"spf.gateway": "error"}, fingerprint([CERT]), CHECKS)
    with sessions(url).begin() as session:
        moved = T0 + timedelta(days=3)
        row = add_guard(session, WID, "guard:" + WID, "domain", "chem.example.org", {}, {}, moved, moved)
        assert (row.baseline, row.drift, row.fingerprint, row.mailed, row.input) == ({}, [], "", "", {})  # anew
    with sessions(url).begin() as session:
        row = session.get(Guard, WID)
        record_drift(session, row, [], "", moved + timedelta(days=1))
        assert row.drift_since is None and row.last_run_at is not None
