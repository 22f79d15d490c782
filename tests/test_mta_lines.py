"""The relay lines for Exim, Sendmail and OpenSMTPD that `show` and the dashboard print beside
Postfix's: exact for each kind of relay, and Sendmail's turned into a sendmail.cf by Debian's
own m4 macros (sendmail-cf), which must say what the lines mean."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mailmove.base.model import Relay
from mailmove.base.mta import exim_lines, opensmtpd_lines, other_mta_lines, sendmail_lines

MAILOUT = Relay("mailout.hrz.tu-darmstadt.de", 25, tls=True)
UNSECURE = Relay("mailout-unsecure.hrz.tu-darmstadt.de", 2525, tls=False)
SENDMAIL_CF = Path("/usr/share/sendmail/cf")  # Debian's sendmail-cf, installed by scripts/setup


def test_exim_routes_everything_remote_to_the_relay_with_tls_required():
    lines = exim_lines(MAILOUT)
    assert "  route_list = * mailout.hrz.tu-darmstadt.de byname" in lines
    assert "  hosts_require_tls = *" in lines
    assert "  tls_require_ciphers = NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" in lines
    plain = exim_lines(UNSECURE)
    assert "  route_list = * mailout-unsecure.hrz.tu-darmstadt.de::2525 byname" in plain  # `::`: a port in a list
    assert not any("tls" in line for line in plain)


def test_opensmtpd_insists_on_starttls_only_for_a_relay_with_tls():
    assert 'action "gateway" relay host smtp+tls://mailout.hrz.tu-darmstadt.de:25' in opensmtpd_lines(MAILOUT)
    assert 'action "gateway" relay host smtp://mailout-unsecure.hrz.tu-darmstadt.de:2525' in opensmtpd_lines(UNSECURE)


def test_every_mta_has_its_lines():
    assert list(other_mta_lines(MAILOUT)) == ["Exim", "Sendmail", "OpenSMTPD"]


@pytest.mark.parametrize("relay", [MAILOUT, UNSECURE], ids=["tls", "unsecure"])
def test_sendmails_lines_make_the_sendmail_cf_they_mean(tmp_path, relay):
    """The .mc lines (the access map's line aside) through m4 with sendmail-cf's macros, as
    `sendmailconfig` does: the smart host in brackets, the relay mailer's port, TLS 1.2 or newer."""
    lines = sendmail_lines(relay)
    macros = [line for line in lines if line.endswith("dnl") and not line.startswith("#")]
    mc = tmp_path / "sendmail.mc"
    mc.write_text("OSTYPE(`linux')dnl\n" + "\n".join(macros) + "\nMAILER(`smtp')dnl\n")
    made = subprocess.run(
        ["m4", f"-D_CF_DIR_={SENDMAIL_CF}/", str(SENDMAIL_CF / "m4" / "cf.m4"), str(mc)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    cf = made.stdout.splitlines()
    assert f"DS[{relay.host}]" in cf
    mailer = cf[next(i for i, line in enumerate(cf) if line.startswith("Mrelay,")) :]
    arguments = next(line.strip() for line in mailer if line.strip().startswith("A="))
    assert arguments == (f"A=TCP $h {relay.port}" if relay.port != 25 else "A=TCP $h")
    tls_options = "O ClientSSLOptions=+SSL_OP_NO_SSLv2 +SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1"
    assert (tls_options in cf) == relay.tls
    assert any(line.startswith("Kaccess ") for line in cf) == relay.tls  # the map with the TLS_Srv line
    if relay.tls:
        assert lines[-1] == f"TLS_Srv:{relay.host}\tENCR:128"
