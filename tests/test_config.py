"""The configuration contract: its keys, the TU Darmstadt defaults, host:port overrides,
durations, TSIG key files as `tsig-keygen` writes them, and docs/configuration.md, written from
the same dataclasses that read the file."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import get_origin

import pytest

from mailmove.base import config_reference
from mailmove.base.config import (
    HostPort,
    Settings,
    ZoneConfig,
    keys_of,
    load_settings,
    parse_duration,
    parse_host_port,
    parse_settings,
    read_tsig_keyfile,
)
from mailmove.base.errors import ConfigError

EXAMPLE = """
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
    config.write_text(EXAMPLE)
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
        ('[timing]\nheartbeat_timeout = "1s"\n', "timing.heartbeat_timeout"),  # activities beat every second
        ('[dashboard]\nsecure_cookies = "false"\n', "dashboard.secure_cookies"),  # bool() once took it for true
        ('[dashboard.roles]\nalice = "boss"\n', 'dashboard.roles."alice"'),
        ("[dashboard]\nroles = 5\n", "dashboard.roles"),
        ('[dashboard.operator_domains]\nalice = "chem.example.org"\n', 'dashboard.operator_domains."alice"'),
        ('[portal]\nurl = ["https://portal.example/"]\n', "portal.url"),
        ("[dns]\nzones = []\n", "dns.zones"),
        ('[dns.zones."x.org"]\nname = "y.org"\n', 'dns.zones."x.org".name'),
        ("paths = 5\n", "paths"),
        ("[mail]\n", "config.mail"),
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


def test_a_secret_stays_a_reference(tmp_path):
    """The keys marked secret name a file or a variable; the settings hold that name, never what it holds."""
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    raw: dict = {}
    for section, (table, _) in keys_of(Settings).items():
        for name, (hint, key) in keys_of(table).items():
            if key.secret:
                reference = str(secret) if key.resolve else "MAILMOVE_TEST_SECRET"
                raw.setdefault(section, {})[name] = [reference] if hint == tuple[str, ...] else reference
    raw["dns"]["zones"] = {"x.org": {"tsig_key": "ddns-key"}}
    raw["dashboard"]["oidc_issuer"] = "https://login.example.org/"
    raw["dashboard"]["oidc_client_id"] = "mailmove"
    assert {"temporal", "dns", "portal", "dashboard"} <= raw.keys()
    settings = parse_settings(raw, tmp_path)
    assert settings.portal.credentials_file == str(secret) and settings.temporal.encryption_key_files == (str(secret),)
    assert "s3cr3t" not in repr(settings)


def every_key():
    """(dotted key, its type, the file that sets it to a value) for every key; a zone's in an example zone."""
    for section, (table, _) in keys_of(Settings).items():
        for name, (hint, _) in keys_of(table).items():
            yield f"{section}.{name}", hint, lambda value, s=section, n=name: {s: {n: value}}
    for name, (hint, _) in keys_of(ZoneConfig).items():
        yield f'dns.zones."z.org".{name}', hint, lambda value, n=name: {"dns": {"zones": {"z.org": {n: value}}}}


@pytest.mark.parametrize("dotted,hint,file", every_key(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_given_a_value_of_the_wrong_kind_is_named(dotted, hint, file):
    tables = get_origin(hint) is dict or hint == tuple[ZoneConfig, ...]
    with pytest.raises(ConfigError) as refused:
        parse_settings(file([1] if tables else {"x": 1}))
    assert refused.value.field == dotted


def test_the_reference_is_written_from_the_dataclasses():
    """docs/configuration.md is what the dataclasses say: if this fails, the words changed in
    mailmove/base/config.py; run `.venv/bin/python -m mailmove.base.config_reference`."""
    assert config_reference.DOC.read_text() == config_reference.reference()


def test_the_defaults_the_reference_shows_are_the_defaults(tmp_path):
    """Each default in docs/configuration.md, written into a file, reads as the built-in default."""
    text = ""
    for section, (table, _) in keys_of(Settings).items():
        text += f"[{section}]\n" + "".join(
            f"{key} = {default}\n" for key, _, default, _ in config_reference.rows(table)
        )
    assert '[timing]\nprobe_interval = "1h"\n' in text and "mx_preference = 10\n" in text
    assert parse_settings(tomllib.loads(text), tmp_path) == parse_settings({}, tmp_path)
