"""The one TOML configuration file, with the TU Darmstadt gateway profile as defaults.

The settings dataclasses below are its schema: each key's type, default and `setting()` words
decide how `parse_settings` reads and checks it and what docs/configuration.md says about it
(written by mailmove/base/config_reference.py). Outside tools rely on the keys. Secrets are
references: the TSIG key file and key names, the portal credential's file or environment
variable, key files; the settings never hold a secret itself.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
import tomllib
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from mailmove.base.errors import ConfigError
from mailmove.base.model import Relay, Timings

CONFIG_ENV = "MAILMOVE_CONFIG"


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: str, default_port: int, key: str) -> HostPort:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    text = str(value).strip()
    if m := re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text):
        host, port = m.group(1), m.group(2)
    elif text.count(":") > 1:
        host, port = text, None
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    else:
        host, port = text, None
    if not host:
        raise ConfigError(key, f"{value!r} has no host")
    # ASCII digits only: str.isdigit() admits '²', which int() refuses (found by tests/security/test_fuzz_inputs.py)
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
        raise ConfigError(key, f"{value!r} has no valid port")
    return HostPort(host, int(port) if port else default_port)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


MAX_DURATION = 100 * 365 * 86400.0  # a century: longer is a typo, and `inf` or 1e20 s would break every timer


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number or a string such as `90s`, `15m`, `1h30m`, `14d`; at most a century."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if 0 <= value <= MAX_DURATION else math.nan  # nan: also for TOML's nan and inf
    else:
        text = str(value).strip().replace(" ", "")
        parts = list(_DURATION.finditer(text))
        if not text or "".join(p.group(0) for p in parts) != text:
            raise ConfigError(key, f"{value!r} is not a duration (e.g. 90s, 15m, 2h, 14d)")
        seconds = sum(float(p.group(1)) * _UNIT[p.group(2)] for p in parts)
    if not seconds <= MAX_DURATION:
        raise ConfigError(key, f"{str(value)[:40]!r} is not a duration from 0 to a century (e.g. 90s, 15m, 14d)")
    return seconds


def _positive_duration(value: Any, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(key, f"{value!r} is no time at all: give a duration such as 30m")
    return seconds


_SIZE = re.compile(r"([0-9]{1,12})\s*(k|kb|kib|m|mb|mib|g|gb|gib)?", re.I)


def parse_size(value: Any, key: str, low: int = 1024, high: int = 1 << 30) -> int:
    """Bytes from a whole number or a string such as `512k`, `1M`, `1 MiB` (k, M, G are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif m := _SIZE.fullmatch(str(value).strip()):
        size = int(m.group(1)) * 1024 ** " kmg".index((m.group(2) or " ")[0].lower())
    else:
        raise ConfigError(key, f"{str(value)[:60]!r} is not a size such as 1048576, 512k or 1M")
    if not low <= size <= high:
        raise ConfigError(key, f"{size} bytes is not from {low} to {high}")
    return size


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str


# quoted strings first, so that a `//` inside a base64 secret is not taken for a comment
_COMMENT = re.compile(r'"[^"]*"|#[^\n]*|//[^\n]*|/\*.*?\*/', re.S)
_KEY_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)


def read_secret(path: str | Path, key: str, limit: int) -> bytes:
    """A secret file's bytes, at most `limit`; a ConfigError naming `key` if it cannot be read,
    is empty or is larger."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(key, f"{path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit or not data.strip():
        raise ConfigError(key, f"{path} is {'empty' if not data.strip() else 'too large'}")
    return data


def read_tsig_keyfile(path: Path) -> dict[str, TsigKey]:
    """Keys from a file as `tsig-keygen` writes it (BIND `key "name" { ... };` blocks)."""
    text = _COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", path.read_text())
    keys = {}
    for name, body in _KEY_BLOCK.findall(text):
        algorithm = re.search(r"algorithm\s+\"?([\w-]+)\"?\s*;", body)
        secret = re.search(r'secret\s+"([^"]+)"\s*;', body)
        if algorithm and secret:
            keys[name.rstrip(".").lower()] = TsigKey(name.rstrip("."), algorithm.group(1), secret.group(1))
    return keys


@dataclass(frozen=True)
class Key:
    """What one key of the file is for, and how it is read beyond what its type says.

    The type decides first: `str` is text, `int` a whole number from `low` to `high`, `float`
    seconds (a duration such as `90s` or `14d`), `bool` true or false, `HostPort` a
    `host[:port]` (`port` by default), a tuple a list of one of these, `dict[str, X]` a table of
    X by name, a dataclass a table of its own keys, a tuple of dataclasses tables by name (the
    name filling their first field). `read` replaces the type's reader for a value of a shape of
    its own, which `kind` names in the reference; `choices` limits text; `resolve` makes the
    value's path relative to the file; with `or_default` an empty value stands for the default;
    `secret` marks a reference to a secret (a file or a variable's name), read where it is used.
    """

    doc: str
    low: int = 0
    high: int = 0
    port: int = 0
    choices: tuple[str, ...] = ()
    read: Callable[[Any, str], Any] | None = None
    kind: str = ""
    resolve: Callable[[str, Path], str] | None = None
    or_default: bool = False
    secret: bool = False


def setting(default: Any, doc: str, **how: Any) -> Any:
    """A field that is a key of the file: its default, what it is for, and how it is read (`Key`)."""
    if isinstance(default, HostPort):
        how.setdefault("port", default.port)
    metadata = {"key": Key(doc, **how)}
    if isinstance(default, dict):
        return field(default_factory=functools.partial(dict, default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A field that is a table of the file; its class's docstring says what the table is for."""
    return field(default_factory=cls, metadata={"key": Key("")})


def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    return value


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    return tuple(value)


def _text(value: Any, key: str, choices: tuple[str, ...] = ()) -> str:
    """Text; a number as its digits, since the environment reads `MAILMOVE_DASHBOARD_OIDC_CLIENT_ID=1234` as one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(key, "must be a string")
    text = str(value)
    if choices and text not in choices:
        either = (
            f"neither {choices[0]!r} nor {choices[1]!r}"
            if len(choices) == 2
            else f"not {', '.join(choices[:-1])} or {choices[-1]}"
        )
        raise ConfigError(key, f"{text!r} is {either}")
    return text


def _int(value: Any, key: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false")
    return value


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _identifier(value: Any, key: str) -> str:
    """A Temporal namespace or task queue: it goes into visibility queries, so letters, digits,
    dots, dashes and underscores only."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(key, f"{str(value)[:60]!r} may hold only letters, digits, '.', '-' and '_'")
    return value


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10000:
        raise ConfigError(key, "must be a number of RCPTs a second, more than 0")
    return float(value)


def _host_names(value: Any, key: str) -> tuple[str, ...]:
    hosts = tuple(h.rstrip(".").lower() for h in _str_list(value, key))
    if not hosts:
        raise ConfigError(key, "must name at least one host")
    return hosts


def _networks(value: Any, key: str) -> tuple[str, ...]:
    """Networks or addresses, each exactly as `ipaddress` reads it (no host bits beyond the
    prefix): they become firewall rules, and the host agent checks them the same way."""
    texts = _str_list(value, key)
    for text in texts:
        try:
            ipaddress.ip_network(text)
        except ValueError:
            raise ConfigError(key, f"{text[:60]!r} is not a network such as 130.83.156.224/27") from None
    return texts


_NFT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")  # a plain identifier: nothing nft would parse


def _nft_table(value: Any, key: str) -> str:
    text = _text(value, key)
    family, _, table = text.partition(" ")
    if family not in ("ip", "ip6", "inet") or not _NFT_NAME.fullmatch(table):
        raise ConfigError(key, f"{text[:60]!r} is not 'FAMILY NAME', e.g. 'inet filter'")
    return text


def _nft_chain(value: Any, key: str) -> str:
    text = _text(value, key)
    if not _NFT_NAME.fullmatch(text):
        raise ConfigError(key, f"{text[:60]!r} is not a plain chain name")
    return text


def _postfix_path(value: Any, key: str) -> str:
    """An absolute path that goes into a `postconf` argument as it is: nothing Postfix expands
    (`$`), splits (blanks, commas) or quotes."""
    text = _text(value, key)
    if text and (not text.startswith("/") or any(c in "$,'\"\\" or c.isspace() or not c.isprintable() for c in text)):
        raise ConfigError(key, f"{text[:60]!r} is not an absolute path without blanks, commas, quotes or `$`")
    return text


def _required_postfix_path(value: Any, key: str) -> str:
    """`_postfix_path`, and never empty: Postfix's commands get it as `-c`."""
    if not (text := _postfix_path(value, key)):
        raise ConfigError(key, "must name a path")
    return text


def _postfix_command(value: Any, key: str) -> tuple[str, ...]:
    """A command list without a `-c` of its own: the agent gives `-c postfix_config_dir`, and a
    second one would silently win over it."""
    command = _str_list(value, key)
    if any(arg.startswith("-c") for arg in command):
        raise ConfigError(key, "must not name a configuration directory (`-c`): that is agent.postfix_config_dir")
    return command


def _mail_address(value: Any, key: str) -> str:
    address = _text(value, key).strip()
    if address and "@" not in address:
        raise ConfigError(key, f"{address!r} is not an e-mail address")
    return address


def _resolve_path(value: str, base: Path) -> str:
    return str((base / value).resolve()) if value and not Path(value).is_absolute() else value


def _resolve_sqlite(url: str, base: Path) -> str:
    """A relative SQLite path is relative to the config file, like every other path."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + _resolve_path(url[len("sqlite:///") :], base)
    return url


# how several keys are read, by name
_PORT = {"low": 1, "high": 65535}
_PREFERENCE = {"low": 0, "high": 65535}
_PATH = {"resolve": _resolve_path}
_SECRET_FILE = {"resolve": _resolve_path, "secret": True}
_NAME = {"read": _identifier, "kind": "name: letters, digits, `.`, `-`, `_`"}
_NETWORKS = {"read": _networks, "kind": "list of networks"}
_LIFETIME = {"read": _positive_duration, "kind": "duration, more than 0"}


@dataclass(frozen=True)
class ZoneConfig:
    """A zone whose MX set mailmove changes, by its name: where to read it and where to update it."""

    name: str
    authoritative: tuple[HostPort, ...] = setting((), "else the NS set at the apex and the parent", port=53)
    update_server: HostPort | None = setting(None, "else the SOA MNAME", port=53, or_default=True)
    tsig_key: str = setting("", "the key's name in `dns.tsig_keyfile`", secret=True)


@dataclass(frozen=True)
class TemporalConfig:
    """Where Temporal is and how to reach it safely. Secrets are files: the client key, the API
    key and the payload keys are read at connect time and never written anywhere."""

    address: str = setting("", "`host:port` of the frontend; empty: `mailmove up` starts the embedded dev server")
    namespace: str = setting("default", "the namespace of every move", **_NAME)
    task_queue: str = setting("mailmove", "the worker's; a host agent polls `<task_queue>-host-<fqdn>`", **_NAME)
    embedded_listen: HostPort = setting(HostPort("127.0.0.1", 7233), "where `mailmove up`'s dev server listens")
    embedded_ui_port: int = setting(8233, "the port of its Temporal UI (on the same host)", **_PORT)
    tls: bool = setting(False, "TLS with the system's CAs; on by itself with any file below")
    tls_ca_file: str = setting("", "the CA that signed the frontend's certificate", **_PATH)
    tls_server_name: str = setting("", "the name in that certificate, when it is not the address's host")
    tls_cert_file: str = setting("", "mTLS: this client's certificate (chain)...", **_PATH)
    tls_key_file: str = setting("", "...and its private key", **_SECRET_FILE)
    api_key_file: str = setting("", "Temporal Cloud and clusters that take API keys (implies TLS)", **_SECRET_FILE)
    encryption_key_files: tuple[str, ...] = setting(
        (), "payload keys (`mailmove keygen`): the first encrypts, all decrypt; empty: `var/payload-key` for the "
        "embedded stack, in clear on a cluster", **_SECRET_FILE,
    )  # fmt: skip

    @property
    def uses_tls(self) -> bool:
        """TLS is asked for, or implied by a TLS file or an API key (never sent in clear)."""
        return bool(
            self.tls or self.tls_ca_file or self.tls_cert_file or self.tls_key_file or self.tls_server_name
            or self.api_key_file
        )  # fmt: skip


@dataclass(frozen=True)
class DatabaseConfig:
    """The store: moves, waves, the audit history and the portal's idempotency records."""

    url: str = setting(
        "sqlite:///var/mailmove.db", "or `postgresql://user@host/db` (a password in it is masked in all output; "
        "better libpq's `PGPASSFILE`); a relative SQLite path is relative to the file", resolve=_resolve_sqlite,
        kind="URL",
    )  # fmt: skip

    @property
    def shown(self) -> str:
        """The URL with its password, if it has one, masked: for output and identities."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user, _, host = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


@dataclass(frozen=True)
class GatewayConfig:
    """The central mail gateway a domain moves behind, and the relays its mail servers send through."""

    mx: tuple[str, ...] = setting(
        ("a2681.mx.srv.dfn.de", "b2681.mx.srv.dfn.de", "c2681.mx.srv.dfn.de"), "the gateway's MX hosts: a moved "
        "domain's MX set", read=_host_names, kind="list of host names, at least one",
    )  # fmt: skip
    mx_preference: int = setting(10, "their MX preference", **_PREFERENCE)
    legacy_preference: int = setting(5, "the legacy host's preference while both are in the MX set", **_PREFERENCE)
    smtp_port: int = setting(25, "port used to probe the gateway MX hosts", **_PORT)
    networks: tuple[str, ...] = setting(
        ("130.83.156.224/27", "130.83.252.128/26", "2001:41b8:83f:1610::/64", "2001:41b8:83f:1611::/64"),
        "where the gateway sends from: a moved server opens tcp/25 to them; `spf.gateway` wants them covered",
        **_NETWORKS,
    )
    relay: HostPort = setting(
        HostPort("mailout.hrz.tu-darmstadt.de", 25), "relay scope `external`: TLS, a TrustedServerList entry"
    )
    relay_internal: HostPort = setting(
        HostPort("mailout-intern.hrz.tu-darmstadt.de", 25), "relay scope `internal`: TLS, campus only, no entry"
    )
    relay_unsecure: HostPort = setting(
        HostPort("mailout-unsecure.hrz.tu-darmstadt.de", 25), "relay scope `unsecure`: no TLS, a list of its own"
    )
    internal_relay_addresses: tuple[str, ...] = setting(
        ("130.83.157.89", "2001:41b8:83f:1608::25:3"), "the internal relay's addresses: outbound tcp/25 to these "
        "only, for relay scope `internal`", **_NETWORKS,
    )  # fmt: skip
    spf_include: str = setting("_spf.tu-darmstadt.de", "the SPF record a domain includes to cover the gateway")
    probe_rate: float = setting(
        10.0, "RCPTs a second at most when the Whitelist is checked at the gateway", read=_rate,
        kind="number, more than 0, at most 10000",
    )  # fmt: skip

    def relays(self) -> dict[str, Relay]:
        """The three relays by scope: mailout (TLS, list entry), mailout-intern (TLS, campus
        only), mailout-unsecure (no TLS, list of its own)."""
        return {
            "external": Relay(self.relay.host, self.relay.port, tls=True),
            "internal": Relay(self.relay_internal.host, self.relay_internal.port, tls=True),
            "unsecure": Relay(self.relay_unsecure.host, self.relay_unsecure.port, tls=False),
        }


@dataclass(frozen=True)
class DnsConfig:
    """How mailmove reads DNS and where it updates zones (RFC 2136, signed with TSIG)."""

    resolvers: tuple[HostPort, ...] = setting((), "recursive resolvers; empty: the system's", port=53)
    tsig_keyfile: str = setting("", "as `tsig-keygen` writes it; may hold several keys", **_SECRET_FILE)
    timeout: float = setting(3.0, "one DNS query")
    zones: tuple[ZoneConfig, ...] = setting((), 'optional, per zone: `[dns.zones."NAME"]`, below')

    def zone_for(self, name: str) -> ZoneConfig | None:
        """The configured zone that is the longest suffix of `name`, if any."""
        name = name.rstrip(".").lower()
        best = None
        for zone in self.zones:
            if name == zone.name or name.endswith("." + zone.name):
                if best is None or len(zone.name) > len(best.name):
                    best = zone
        return best


@dataclass(frozen=True)
class PortalConfig:
    """The centre's request portal, where domains and list entries are filed."""

    mode: str = setting(
        "manual", "`manual`: a person files the form shown and confirms; `http`: filed over the portal's HTTP "
        "contract", choices=("manual", "http"),
    )  # fmt: skip
    url: str = setting("https://www-cgi.hrz.tu-darmstadt.de/mail/", "HTTPS verified against the system's CAs")
    domain_form: str = setting("antrag-maildomain.php", "the mail domain's form, relative to `url`")
    tsl_form: str = setting("antrag-tsl.php", "the TrustedServerList entry's form")
    wl_form: str = setting("antrag-wl.php", "the Whitelist entries' form")
    unsecure_form: str = setting("", "the MailOut-Unsecure list has no form of its own: the web interface")
    credentials_env: str = setting("", "name of an environment variable holding a bearer token", secret=True)
    credentials_file: str = setting("", "or a file holding it", **_SECRET_FILE)
    allow_plain_http: bool = setting(False, "a token goes over http:// only to a loopback host unless this is true")
    timeout: float = setting(30.0, "one request to the portal")

    @property
    def form_url(self) -> str:
        return self.form(self.domain_form)

    def form(self, name: str) -> str:
        return self.url.rstrip("/") + "/" + name if name else self.url

    def token(self) -> str:
        if self.credentials_file:
            return Path(self.credentials_file).read_text().strip()
        if self.credentials_env:
            return os.environ.get(self.credentials_env, "")
        return ""


@dataclass(frozen=True)
class SmtpConfig:
    """mailmove's own SMTP dialogues: the RCPT probe, the relay test, the checks, the mails to a contact."""

    helo: str = setting("", "the name in EHLO; empty: this machine's FQDN")
    ca_file: str = setting(
        "", "extra CA for STARTTLS (probe, relay test, checks) and the MTA-STS fetch (tests, private CAs); read "
        "once per process (a changed file: restart the worker)", **_PATH,
    )  # fmt: skip
    timeout: float = setting(30.0, "one SMTP dialogue")


# Activities beat every second (activities/heartbeat.py) and the worker passes a beat on at most
# every 2 s, or every 80% of the heartbeat timeout when that is shorter: below this floor one
# late beat would take a live activity for a lost one.
HEARTBEAT_FLOOR = 2.0

# Timings is a wire type (the workflows' input), so the words for its keys are kept here.
TIMING_DOCS = {
    "probe_interval": "registration detection and the portal's status are polled this often",
    "reminder_interval": "a step waiting for a person is reminded this often",
    "escalate_after": "a person's step not done after this: the move needs attention (and keeps waiting)",
    "convergence_window": "one polling activity asks the authoritative servers this long",
    "convergence_poll": "between two rounds inside that activity",
    "convergence_pause": "a durable timer between two windows",
    "convergence_escalate_after": "an automatic update not served everywhere after this: the move needs attention",
    "centre_poll": "`--dns centre`: the authoritative servers are polled this often",
    "dns_timeout": "one attempt of a DNS activity (read, update) before it is given up as hung",
    "portal_timeout": "one attempt of filing with the portal",
    "probe_timeout": "one attempt of the RCPT probe at the gateway",
    "heartbeat_timeout": "a lost worker or agent is noticed after this (docs/recovery.md)",
    "retry_limit": "a stage's activity is retried this long, then it needs attention",
    "detect_timeout": "one registration source's answer (portal status, RCPT probe), retries included",
    "relay_retry_initial": "server move: the relay test's backoff, doubling...",
    "relay_retry_max": "...up to this",
    "relay_test_limit": "then the relay test stage needs attention",
    "agent_timeout": "one firewall change, relay test or Postfix change on the host agent (its probe message: twice this)",
    "check_timeout": "one run of the checks in `preflight` and `done`",
}


@dataclass(frozen=True)
class DashboardConfig:
    """The web dashboard and its JSON API: who may sign in, how, and for how long."""

    listen: HostPort = setting(HostPort("127.0.0.1", 8080), "where the dashboard listens")
    proxy_header: str = setting("", 'e.g. "X-Remote-User": identity from a reverse proxy...')
    trusted_proxies: tuple[str, ...] = setting((), "...only from these addresses (needed with `proxy_header`)")
    roles: dict[str, str] = setting(
        {}, 'proxy and OIDC users: `[dashboard.roles]`, `"alice" = "operator"`; viewer by default',
        choices=("viewer", "operator", "admin"),
    )  # fmt: skip
    operator_domains: dict[str, tuple[str, ...]] = setting(
        {}, 'an operator limited to their domains: `[dashboard.operator_domains]`, `"alice" = ["chem.example.org"]`'
    )
    secure_cookies: bool = setting(False, "true behind TLS: the session cookie is then `Secure`")
    codec_origins: tuple[str, ...] = setting(
        (), "origins of the Temporal UI that may call the codec endpoint (`/codec`) from a browser; empty: the "
        "embedded UI of `mailmove up`",
    )  # fmt: skip
    session_secret_file: str = setting(
        "", "signs the session cookie; empty: `var/dashboard-secret`, made on first start (0600)", **_SECRET_FILE
    )
    max_body: int = setting(
        1 << 20, "a request body larger than this is refused (413) before it is read", read=parse_size,
        kind="size: bytes, or `512k`, `1M` (1 KiB to 1 GiB)",
    )  # fmt: skip
    session_idle: float = setting(
        2 * 3600.0, "a browser session ends after this long without a request...", **_LIFETIME
    )
    session_absolute: float = setting(12 * 3600.0, "...and this long after its login in any case", **_LIFETIME)
    login_token_ttl: float = setting(3600.0, "the one-time login link of `mailmove up` expires unused", **_LIFETIME)
    oidc_issuer: str = setting("", "OIDC login (production), e.g. https://login.example.org/realms/tu")
    oidc_client_id: str = setting("", "this client at the issuer (needed with `oidc_issuer`)")
    oidc_client_secret_env: str = setting("", "name of an environment variable holding its secret...", secret=True)
    oidc_client_secret_file: str = setting("", "...or a file holding it", **_SECRET_FILE)
    oidc_name_claim: str = setting("preferred_username", "the ID token's claim that names the user")

    def grant(self, name: str) -> tuple[str, tuple[str, ...]]:
        """The role and domains this configuration gives a proxy or OIDC user (default: viewer)."""
        return self.roles.get(name, "viewer"), tuple(self.operator_domains.get(name, ()))

    def oidc_secret(self) -> str:
        if self.oidc_client_secret_file:
            return Path(self.oidc_client_secret_file).read_text().strip()
        return os.environ.get(self.oidc_client_secret_env, "") if self.oidc_client_secret_env else ""


@dataclass(frozen=True)
class AgentConfig:
    """The host agent on a mail server: how it reaches nftables and Postfix there, and the
    networks it opens tcp/25 to at most, whoever schedules its activities.

    Commands are lists, so a prefix works: `["sudo", "nft"]`; Postfix's configuration directory is
    `postfix_config_dir`, given to each Postfix command as `-c`.
    """

    nft: tuple[str, ...] = setting(("nft",), "the nft command; empty: the default", or_default=True)
    nft_table: str = setting(
        "inet filter", "the host's own filter table: an accept in a table of our own would not override a drop in "
        "the host's", read=_nft_table, kind="`FAMILY NAME` (ip, ip6, inet)",
    )  # fmt: skip
    nft_input_chain: str = setting("input", "the rules go first in this chain...", read=_nft_chain, kind="name")
    nft_output_chain: str = setting("output", "...and this one", read=_nft_chain, kind="name")
    postconf: tuple[str, ...] = setting(
        ("postconf",),
        "the postconf command; empty: the default",
        or_default=True,
        read=_postfix_command,
        kind="command",
    )
    postfix: tuple[str, ...] = setting(
        ("postfix",), "the postfix command (`check` and `reload` after the agent changes the relay lines); empty: the default",
        or_default=True, read=_postfix_command, kind="list of text",
    )  # fmt: skip
    postqueue: tuple[str, ...] = setting(
        ("postqueue",), "the postqueue command (where the agent's probe message waits); empty: the default",
        or_default=True, read=_postfix_command, kind="list of text",
    )  # fmt: skip
    postfix_config_dir: str = setting(
        "/etc/postfix", "Postfix's configuration directory, given to each of these commands as `-c`; a move "
        "never chooses it", read=_required_postfix_path, kind="absolute path",
    )  # fmt: skip
    postfix_ca_file: str = setting(
        "", "the agent's relay change sets `smtp_tls_CAfile` to this for a relay with TLS; empty: left as it is",
        read=_postfix_path, kind="absolute path",
    )  # fmt: skip
    postfix_smtp_port: int = setting(
        25, "the agent's probe message is submitted to the local Postfix at 127.0.0.1 on this port",
        **_PORT,
    )  # fmt: skip
    postfix_log: str = setting(
        "/var/log/mail.log", "the file Postfix logs to (syslog's, or its `maillog_file`): the probe message's "
        "delivery to the relay is read there", read=_required_postfix_path, kind="absolute path",
    )  # fmt: skip
    postfix_probe_wait: float = setting(
        120.0, "the probe message must have reached the relay this long after its submission", **_LIFETIME
    )
    allowed_networks: tuple[str, ...] = setting(
        (), "what a plan may open tcp/25 to; empty: `gateway.networks` and `gateway.internal_relay_addresses` of "
        "this file", **_NETWORKS,
    )  # fmt: skip


@dataclass(frozen=True)
class CheckConfig:
    """`mailmove check`: where it looks (ports a test or a lab may move) and when it warns."""

    smtp_port: int = setting(25, "a server's SMTP port for the banner and STARTTLS checks", **_PORT)
    mta_sts_port: int = setting(
        443, "`https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461; at most 64 KiB, within `timeout` in all)",
        **_PORT,
    )  # fmt: skip
    certificate_days: int = setting(14, "a certificate expiring sooner is a warning", low=0, high=3650)
    timeout: float = setting(10.0, "per SMTP dialogue and policy fetch")


@dataclass(frozen=True)
class NotifyConfig:
    """E-mail to a move's contact: a person's step waiting, overdue, the move done.

    Off until `sender` is set: the gateway wants an envelope sender that receives mail."""

    sender: str = setting(
        "", 'e.g. "mailmove@hrz.tu-darmstadt.de" (must receive mail)', read=_mail_address, kind="an e-mail address"
    )
    relay: HostPort | None = setting(
        None, "empty: `gateway.relay_internal` (campus, TLS, no entry needed)", port=25, or_default=True
    )
    dashboard_url: str = setting("", 'e.g. "https://mailmove.hrz.tu-darmstadt.de/": links in the mails')


@dataclass(frozen=True)
class GuardConfig:
    """The guard of every finished move: a Temporal Schedule that runs its stage-`after` checks
    again and mails the contact once per drift (docs/operations.md)."""

    interval: float = setting(86400.0, "a guard runs this often", **_LIFETIME)
    jitter: float = setting(3600.0, "each run starts up to this much later, so that guards do not run at once")
    agent_wait: float = setting(
        60.0, "a server's relay test waits this long for its host agent to take it; none polling: not tested",
        **_LIFETIME,
    )  # fmt: skip


def _query_rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100000:
        raise ConfigError(key, "must be a number of queries a second, more than 0, at most 100000")
    return float(value)


@dataclass(frozen=True)
class SurveyConfig:
    """`mailmove survey`: how many domains it reads at once, and how politely it asks each DNS server."""

    rate: float = setting(
        500.0, "queries a second at most to any one DNS server (resolver or authoritative), each its own token "
        "bucket", read=_query_rate, kind="number, more than 0, at most 100000",
    )  # fmt: skip
    concurrency: int = setting(50, "domains read at once, unless `--concurrency` says otherwise", low=1, high=1000)
    max_domains: int = setting(20000, "a domain file or a zone transfer naming more is refused", low=1, high=1000000)
    transfer_timeout: float = setting(60.0, "`--zone`: the whole zone transfer (AXFR) from the primary", **_LIFETIME)


@dataclass(frozen=True)
class PathsConfig:
    """mailmove's own files."""

    var: str = setting(
        "var", "the state folder (0700): the SQLite store, the dev server's state and log, the keys and secrets "
        "`mailmove up` makes", **_PATH,
    )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """The whole file, one table a section, in the order of docs/configuration.md."""

    temporal: TemporalConfig = section(TemporalConfig)
    database: DatabaseConfig = section(DatabaseConfig)
    gateway: GatewayConfig = section(GatewayConfig)
    dns: DnsConfig = section(DnsConfig)
    portal: PortalConfig = section(PortalConfig)
    smtp: SmtpConfig = section(SmtpConfig)
    timing: Timings = section(Timings)
    dashboard: DashboardConfig = section(DashboardConfig)
    agent: AgentConfig = section(AgentConfig)
    check: CheckConfig = section(CheckConfig)
    survey: SurveyConfig = section(SurveyConfig)
    notify: NotifyConfig = section(NotifyConfig)
    guard: GuardConfig = section(GuardConfig)
    paths: PathsConfig = section(PathsConfig)
    source: Path | None = None  # the file read, if any

    @property
    def var_dir(self) -> Path:
        return Path(self.paths.var)

    def tsig_keys(self) -> dict[str, TsigKey]:
        if not self.dns.tsig_keyfile:
            return {}
        return read_tsig_keyfile(Path(self.dns.tsig_keyfile))


@functools.cache
def keys_of(cls: type) -> dict[str, tuple[Any, Key]]:
    """The keys of a table of the file: name -> (type, Key)."""
    hints = get_type_hints(cls)
    if cls is Timings:
        return {f.name: (hints[f.name], Key(TIMING_DOCS[f.name])) for f in fields(cls)}
    return {f.name: (hints[f.name], f.metadata["key"]) for f in fields(cls) if "key" in f.metadata}


SECTIONS = tuple(keys_of(Settings))  # the tables of the file


def parse_settings(raw: dict, base: Path = Path("."), source: Path | None = None) -> Settings:
    """Typed settings from a parsed TOML document; relative paths are relative to `base`."""
    return _across_keys(replace(_read_table(Settings, raw, "", base), source=source))


def _read_table(cls: type, table: dict, prefix: str, base: Path, **given: Any) -> Any:
    """`table` as `cls`: each key read as its type and Key say, the defaults for the keys not given."""
    known = keys_of(cls)
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix or 'config'}.{name}", f"unknown key (known: {', '.join(sorted(known))})")
    for name, (hint, key) in known.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in table and (table[name] or not key.or_default):
            _no_nul(table[name], dotted)
            given[name] = _read(hint, key, table[name], dotted, base)
        elif _is_table(hint):  # an absent section: its defaults, read as the file's (paths relative to it)
            given[name] = _read_table(hint, {}, dotted, base)
        elif key.resolve and getattr(cls, name):  # a default path is relative to the file too
            given[name] = key.resolve(getattr(cls, name), base)
    return cls(**given)


def _read(hint: Any, key: Key, value: Any, dotted: str, base: Path) -> Any:
    """One value of the file as type `hint`, checked as `key` says; a ConfigError names `dotted`."""
    origin, args = get_origin(hint), get_args(hint)
    if key.read:
        return key.read(value, dotted)
    if hint is str:
        text = _text(value, dotted, key.choices)
        return key.resolve(text, base) if key.resolve else text
    if hint is int:
        return _int(value, dotted, key.low, key.high)
    if hint is float:
        return parse_duration(value, dotted)
    if hint is bool:
        return _bool(value, dotted)
    if hint is HostPort:
        return parse_host_port(value, key.port, dotted)
    if origin is types.UnionType:  # X | None: an empty value is None, the default (`or_default`)
        return _read(args[0], key, value, dotted, base)
    if origin is dict:
        return {k: _read(args[1], key, v, f'{dotted}."{k}"', base) for k, v in _table(value, dotted).items()}
    if origin is tuple and args[0] in (str, HostPort):
        return tuple(_read(args[0], key, item, dotted, base) for item in _str_list(value, dotted))
    if origin is tuple:  # tables by name, the name filling the first field: [dns.zones."NAME"]
        tables = {f'{dotted}."{name}"': (name.rstrip(".").lower(), t) for name, t in _table(value, dotted).items()}
        return tuple(_read_table(args[0], _table(t, at), at, base, name=name) for at, (name, t) in tables.items())
    if _is_table(hint):
        return _read_table(hint, _table(value, dotted), dotted, base)
    raise TypeError(f"{dotted}: no reader for {hint}")


def _is_table(hint: Any) -> bool:
    return is_dataclass(hint) and hint is not HostPort


def _across_keys(s: Settings) -> Settings:
    """The rules that take more than one key, the floor of `timing.heartbeat_timeout` (the timing
    keys are a wire type's fields, read without a `Key` of their own), and the default of
    `dashboard.codec_origins`, which is `temporal`'s."""
    portal, dashboard, temporal = s.portal, s.dashboard, s.temporal
    target = urlsplit(portal.url)
    if (
        (portal.credentials_env or portal.credentials_file)
        and target.scheme == "http"
        and not _loopback(target.hostname or "")
        and not portal.allow_plain_http
    ):
        raise ConfigError(
            "portal.url", f"{portal.url} is plain http: the portal token would cross the network in clear "
            "(use https, or set portal.allow_plain_http = true)",
        )  # fmt: skip
    if dashboard.oidc_issuer and not dashboard.oidc_client_id:
        raise ConfigError("dashboard.oidc_client_id", "is required with dashboard.oidc_issuer")
    if dashboard.proxy_header and not dashboard.trusted_proxies:
        raise ConfigError("dashboard.trusted_proxies", "name the proxy's addresses when proxy_header is set")
    if s.timing.heartbeat_timeout < HEARTBEAT_FLOOR:
        raise ConfigError(
            "timing.heartbeat_timeout",
            f"must be at least {HEARTBEAT_FLOOR:g}s: an activity beats every second, and a shorter timeout "
            "takes a live activity whose beat is late for a lost one",
        )
    if dashboard.codec_origins or temporal.address:
        return s
    hosts = sorted({temporal.embedded_listen.host, "localhost"})
    embedded = tuple(f"http://{host}:{temporal.embedded_ui_port}" for host in hosts)
    return replace(s, dashboard=replace(dashboard, codec_origins=embedded))


def _no_nul(value: Any, key: str) -> None:
    """A NUL in any value is refused before it is read: paths, commands and names all end at it in C."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nul(v, f"{key}.{k}")
    elif isinstance(value, list):
        for v in value:
            _no_nul(v, key)
    elif isinstance(value, str) and "\x00" in value:
        raise ConfigError(key, "holds a NUL character")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment_overrides(raw: dict, environ: dict[str, str]) -> dict:
    """`MAILMOVE_<SECTION>_<KEY>=value` sets `[section] key` (containers, systemd units): the
    value is read as a TOML value when it is one (`30`, `true`, `["a", "b"]`), else as text.
    Secrets stay references here too: name a file or a variable, never the secret."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for name, value in environ.items():
        if not name.startswith("MAILMOVE_"):
            continue
        section, _, key = name.removeprefix("MAILMOVE_").lower().partition("_")
        if section not in SECTIONS or not key:
            continue  # not configuration (MAILMOVE_USER, say)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except (ValueError, RecursionError):  # not TOML (RecursionError: `[[[[...` deeper than the reader goes)
            parsed = value
        if not isinstance(merged.setdefault(section, {}), dict):
            raise ConfigError(section, f"must be a table (the file makes it a value, and {name} sets a key in it)")
        merged[section][key] = parsed
    return merged


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """From `path`, else `$MAILMOVE_CONFIG`, else the built-in defaults (relative to the cwd);
    then `MAILMOVE_<SECTION>_<KEY>` variables of the environment on top."""
    environ = dict(os.environ) if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    if not path:
        return parse_settings(environment_overrides({}, environ), Path.cwd())
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # TOML's errors, not UTF-8, a NUL in the name; nested too deeply
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return parse_settings(environment_overrides(raw, environ), path.resolve().parent, path.resolve())
