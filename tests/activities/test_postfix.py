"""The MTA's setting for the relay, read with the real `postconf` from a main.cf of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.postfix import PostfixActivities, postfix_lines
from workflows.model import Relay

MAILOUT = Relay("mailout.hrz.tu-darmstadt.de", 25, tls=True)
UNSECURE = Relay("mailout-unsecure.hrz.tu-darmstadt.de", 25, tls=False)


def postconf(tmp_path: Path, main_cf: str) -> PostfixActivities:
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text("")
    return PostfixActivities(("postconf", "-c", str(tmp_path)))


def test_the_lines_for_each_relay():
    assert postfix_lines(MAILOUT) == {
        "relayhost": "[mailout.hrz.tu-darmstadt.de]",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
    }
    assert postfix_lines(UNSECURE) == {"relayhost": "[mailout-unsecure.hrz.tu-darmstadt.de]"}
    assert postfix_lines(Relay("relay.example", 2525, True))["relayhost"] == "[relay.example]:2525"


@pytest.mark.parametrize(
    "main_cf",
    [
        "relayhost = [mailout.hrz.tu-darmstadt.de]\nsmtp_tls_security_level = encrypt\n"
        "smtp_tls_mandatory_protocols = >=TLSv1.2\n",
        # the centre's own example (no brackets), port given, the older exclusion syntax
        "relayhost = mailout.hrz.tu-darmstadt.de:25\nsmtp_tls_security_level = secure\n"
        "smtp_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1\n",
    ],
)
async def test_a_postfix_set_up_as_required(tmp_path, main_cf):
    check = await postconf(tmp_path, main_cf).check_postfix(MAILOUT)
    assert check.mismatches == [] and not check.note
    assert check.actual["relayhost"].lower().startswith(("[mailout", "mailout"))


async def test_a_postfix_that_sends_elsewhere_without_tls(tmp_path):
    check = await postconf(
        tmp_path, "relayhost = smtp.old-relay.example\nsmtp_tls_security_level = may\n"
    ).check_postfix(MAILOUT)
    assert check.mismatches == [
        "relayhost = [mailout.hrz.tu-darmstadt.de]",
        "smtp_tls_security_level = encrypt",
        "smtp_tls_mandatory_protocols = >=TLSv1.2",  # Postfix's default still admits TLS 1.0
    ]
    assert check.actual["smtp_tls_security_level"] == "may"


async def test_the_unsecure_relay_needs_only_the_relayhost(tmp_path):
    check = await postconf(tmp_path, "relayhost = [mailout-unsecure.hrz.tu-darmstadt.de]\n").check_postfix(UNSECURE)
    assert check.mismatches == []


async def test_no_postfix_is_a_note_not_a_failure(tmp_path):
    check = await PostfixActivities(("no-such-postconf",)).check_postfix(MAILOUT)
    assert check.mismatches == [] and "not found" in check.note
    check = await PostfixActivities(("postconf", "-c", str(tmp_path / "missing"))).check_postfix(MAILOUT)
    assert check.mismatches == [] and check.note.startswith("postconf failed")
