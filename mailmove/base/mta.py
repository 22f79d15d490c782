"""The relay lines for mail servers other than Postfix (whose lines are mailmove/base/postfix.py's,
and which the host agent can set): what a postmaster running Exim, Sendmail or OpenSMTPD puts
in its configuration to send through the gateway's relay, TLS 1.2 or newer required where the
relay needs TLS. mailmove changes none of these files; `show` and the dashboard print them.
"""

from __future__ import annotations

from mailmove.base.model import Relay

# the TLS versions below 1.2, as OpenSSL's option flags name them
_OPENSSL_OLD = "+SSL_OP_NO_SSLv2 +SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1"


def exim_lines(relay: Relay) -> list[str]:
    """A router before `dnslookup` that sends everything not local to the relay, and its
    transport. Debian's exim4 is built with GnuTLS (the transport's priority string); an Exim
    built with OpenSSL takes `openssl_options` in its main section instead."""
    host = relay.host if relay.port == 25 else f"{relay.host}::{relay.port}"  # `::`: a colon inside a list
    lines = [
        "# routers, before dnslookup:",
        "gateway_relay:",
        "  driver = manualroute",
        "  domains = ! +local_domains",
        "  transport = gateway_smtp",
        f"  route_list = * {host} byname",
        "  no_more",
        "# transports:",
        "gateway_smtp:",
        "  driver = smtp",
    ]
    if relay.tls:
        lines += [
            "  hosts_require_tls = *",
            "  tls_require_ciphers = NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
            "# Exim built with OpenSSL: instead of tls_require_ciphers, in the main section:",
            "# openssl_options = +no_sslv2 +no_sslv3 +no_tlsv1 +no_tlsv1_1",
        ]
    return lines


def sendmail_lines(relay: Relay) -> list[str]:
    """sendmail.mc (then sendmail.cf made anew from it): the relay as smart host, brackets so
    that no MX is looked up; TLS required by the access map's `TLS_Srv` entry."""
    lines = ["# sendmail.mc:", f"define(`SMART_HOST', `[{relay.host}]')dnl"]
    if relay.port != 25:
        lines.append(f"define(`RELAY_MAILER_ARGS', `TCP $h {relay.port}')dnl")
    if relay.tls:
        lines += [
            f"define(`confCLIENT_SSL_OPTIONS', `{_OPENSSL_OLD}')dnl",
            "FEATURE(`access_db')dnl",
            "# the access map (then `makemap hash access < access`):",
            f"TLS_Srv:{relay.host}\tENCR:128",
        ]
    return lines


def opensmtpd_lines(relay: Relay) -> list[str]:
    """smtpd.conf (OpenSMTPD 6.4 and newer): `smtp+tls://` insists on STARTTLS, and libtls
    allows TLS 1.2 and newer by default; the relay without TLS is plain `smtp://`."""
    scheme = "smtp+tls" if relay.tls else "smtp"
    return [
        "# smtpd.conf:",
        f'action "gateway" relay host {scheme}://{relay.host}:{relay.port}',
        'match from local for any action "gateway"',
    ]


def other_mta_lines(relay: Relay) -> dict[str, list[str]]:
    """Each MTA's lines for the relay, by the MTA's name."""
    return {"Exim": exim_lines(relay), "Sendmail": sendmail_lines(relay), "OpenSMTPD": opensmtpd_lines(relay)}
