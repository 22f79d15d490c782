"""The configuration contract of DESIGN.md: its keys, the TU Darmstadt defaults, host:port
overrides, durations, and TSIG key files as `tsig-keygen` writes them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mailmove.config import (
    ConfigError,
    HostPort,
    load_settings,
    parse_duration,
    parse_host_port,
    parse_settings,
    read_tsig_keyfile,
)

DESIGN_EXAMPLE = """
[temporal]
address = ""
namespace = "default"
[database]
url = "sqlite:///var/mailmove.db"
[gateway]
mx = ["a2681.mx.srv.dfn.de", "b2681.mx.srv.dfn.de", "c2681.mx.srv.dfn.de"]
mx_preference = 10
legacy_preference = 5
smtp_port = 25
networks = ["130.83.156.224/27", "130.83.252.128/26", "2001:41b8:83f:1610::/64", "2001:41b8:83f:1611::/64"]
relay = "mailout.hrz.tu-darmstadt.de:25"
spf_include = "_spf.tu-darmstadt.de"
[dns]
resolvers = []
tsig_keyfile = ""
[dns.zones."chem.example.org"]
authoritative = ["127.0.0.1:15353"]
update_server = "127.0.0.1:15353"
tsig_key = "ddns-key"
[portal]
mode = "manual"
url = "https://www-cgi.hrz.tu-darmstadt.de/mail/"
[dashboard]
listen = "127.0.0.1:8080"
"""


def test_the_design_example_parses_and_relative_paths_follow_the_file(tmp_path: Path):
    config = tmp_path / "mailmove.toml"
    config.write_text(DESIGN_EXAMPLE)
    s = load_settings(config)
    assert s.gateway.mx == ("a2681.mx.srv.dfn.de", "b2681.mx.srv.dfn.de", "c2681.mx.srv.dfn.de")
    assert (s.gateway.mx_preference, s.gateway.legacy_preference, s.gateway.smtp_port) == (10, 5, 25)
    assert s.gateway.relay == HostPort("mailout.hrz.tu-darmstadt.de", 25)
    zone = s.dns.zone_for("www.chem.example.org")
    assert zone.authoritative == (HostPort("127.0.0.1", 15353),) and zone.update_server == HostPort("127.0.0.1", 15353)
    assert s.dns.zone_for("example.org") is None
    assert s.database.url == f"sqlite:///{tmp_path}/var/mailmove.db"
    assert s.portal.form_url == "https://www-cgi.hrz.tu-darmstadt.de/mail/antrag-maildomain.php"


def test_defaults_are_the_tu_darmstadt_profile(monkeypatch):
    monkeypatch.delenv("MAILMOVE_CONFIG", raising=False)
    s = load_settings()
    assert s.gateway.mx[0] == "a2681.mx.srv.dfn.de" and s.gateway.legacy_preference == 5
    assert "2001:41b8:83f:1611::/64" in s.gateway.networks
    assert s.gateway.spf_include == "_spf.tu-darmstadt.de"
    assert s.gateway.relay_internal.host == "mailout-intern.hrz.tu-darmstadt.de"
    assert s.gateway.internal_relay_addresses == ("130.83.157.89", "2001:41b8:83f:1608::25:3")
    assert s.portal.mode == "manual" and s.temporal.address == ""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ns1.example.org", HostPort("ns1.example.org", 53)),
        ("127.0.0.1:5300", HostPort("127.0.0.1", 5300)),
        ("[2001:db8::1]:5300", HostPort("2001:db8::1", 5300)),
        ("2001:db8::1", HostPort("2001:db8::1", 53)),
    ],
)
def test_host_port(text, expected):
    assert parse_host_port(text, 53, "k") == expected


@pytest.mark.parametrize("bad", ["host:99999", "host:x", ":53"])
def test_bad_host_port_names_the_key(bad):
    with pytest.raises(ConfigError, match="^dns.resolvers: "):
        parse_host_port(bad, 53, "dns.resolvers")


def test_durations():
    assert parse_duration("90s", "k") == 90 and parse_duration("1h30m", "k") == 5400
    assert parse_duration("14d", "k") == 14 * 86400 and parse_duration(2.5, "k") == 2.5
    with pytest.raises(ConfigError, match="timing.reminder_interval"):
        parse_duration("soon", "timing.reminder_interval")


@pytest.mark.parametrize(
    "toml,field",
    [
        ("[gateway]\nmx_preferense = 10\n", "gateway.mx_preferense"),
        ('[portal]\nmode = "fax"\n', "portal.mode"),
        ('[gateway]\nlegacy_preference = "5"\n', "gateway.legacy_preference"),
        ('[dns.zones."x.org"]\nupdate_server = "h:0"\n', 'dns.zones."x.org".update_server'),
        ('[timing]\nescalate_after = "forever"\n', "timing.escalate_after"),
    ],
)
def test_bad_values_name_their_key(tmp_path, toml, field):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert err.value.field == field


def test_tsig_keyfile_from_tsig_keygen_with_several_keys(tmp_path):
    keyfile = tmp_path / "keys.conf"
    keyfile.write_text(
        subprocess.run(
            ["tsig-keygen", "-a", "hmac-sha256", "ddns-key"], capture_output=True, text=True, check=True
        ).stdout
        + subprocess.run(
            ["tsig-keygen", "-a", "hmac-sha512", "other."], capture_output=True, text=True, check=True
        ).stdout
        + '# a comment\nkey "slashes" { algorithm hmac-sha256; // trailing\n secret "ab//cd#==";\n};\n'
    )
    keys = read_tsig_keyfile(keyfile)
    assert set(keys) == {"ddns-key", "other", "slashes"}
    assert keys["other"].algorithm == "hmac-sha512" and keys["slashes"].secret == "ab//cd#=="
    assert len(keys["ddns-key"].secret) == 44


def test_the_environment_over_the_file(tmp_path):
    path = tmp_path / "mailmove.toml"
    path.write_text('[database]\nurl = "sqlite:///var/x.db"\n[check]\nsmtp_port = 2525\n')
    environ = {
        "MAILMOVE_DATABASE_URL": "postgresql://mailmove@db.example.org/mailmove",
        "MAILMOVE_DNS_RESOLVERS": '["127.0.0.1:5353", "127.0.0.2"]',
        "MAILMOVE_TIMING_ESCALATE_AFTER": "3d",
        "MAILMOVE_NOTIFY_SENDER": "mailmove@example.org",
        "MAILMOVE_USER": "alice",  # not configuration
    }
    s = load_settings(path, environ)
    assert s.database.url == "postgresql://mailmove@db.example.org/mailmove"
    assert s.dns.resolvers == (HostPort("127.0.0.1", 5353), HostPort("127.0.0.2", 53))
    assert s.timing.escalate_after == 3 * 86400 and s.check.smtp_port == 2525  # the file's, kept
    assert s.notify.sender == "mailmove@example.org"
    with pytest.raises(ConfigError) as err:
        load_settings(path, {"MAILMOVE_DATABASE_URI": "x"})
    assert err.value.field == "database.uri"
    with pytest.raises(ConfigError) as err:
        load_settings(path, {"MAILMOVE_NOTIFY_SENDER": "nobody"})
    assert err.value.field == "notify.sender"


def test_a_database_password_is_never_shown():
    from_file = parse_settings({"database": {"url": "postgresql://mailmove:s3cr%40t@db.example:5432/mailmove"}})
    assert from_file.database.shown == "postgresql://mailmove:***@db.example:5432/mailmove"
    assert parse_settings({"database": {"url": "postgresql://mailmove@db/mm"}}).database.shown.endswith(
        "mailmove@db/mm"
    )


def test_the_portal_token_never_crosses_the_network_in_clear(tmp_path):
    token = {"credentials_file": str(tmp_path / "token"), "mode": "http"}
    with pytest.raises(ConfigError) as caught:
        parse_settings({"portal": {"url": "http://portal.example/mail/", **token}})
    assert caught.value.field == "portal.url"
    for allowed in (
        {"url": "https://portal.example/mail/"},
        {"url": "http://127.0.0.1:8000/"},
        {"url": "http://[::1]:8000/"},
        {"url": "http://portal.example/mail/", "allow_plain_http": True},
    ):
        assert parse_settings({"portal": {**token, **allowed}}).portal.url == allowed["url"]
    assert parse_settings({"portal": {"url": "http://portal.example/", "mode": "http"}})  # no token: nothing to leak
