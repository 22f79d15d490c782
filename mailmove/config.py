"""The one TOML configuration file, with the TU Darmstadt gateway profile as defaults.

Keys follow DESIGN.md (outside tools rely on them). Secrets are references: the TSIG key
file path and key names, the portal credential's file or environment variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from workflows.model import Relay, Timings

CONFIG_ENV = "MAILMOVE_CONFIG"
# the tables of the file, in the order the README documents them
SECTIONS = (
    "temporal", "database", "gateway", "dns", "portal", "smtp", "timing", "dashboard", "agent", "check", "notify", "paths",
)  # fmt: skip


class ConfigError(ValueError):
    """A configuration value is wrong; `field` names it as a dotted TOML key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


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
class ZoneConfig:
    name: str
    authoritative: tuple[HostPort, ...] = ()
    update_server: HostPort | None = None
    tsig_key: str = ""


@dataclass(frozen=True)
class TemporalConfig:
    """Where Temporal is and how to reach it safely. Secrets are files: the client key, the API
    key and the payload keys are read at connect time and never written anywhere."""

    address: str = ""
    namespace: str = "default"
    task_queue: str = "mailmove"
    embedded_listen: HostPort = HostPort("127.0.0.1", 7233)
    embedded_ui_port: int = 8233
    tls: bool = False  # TLS with the system's CAs; on by itself with any file below
    tls_ca_file: str = ""  # the CA that signed the frontend's certificate
    tls_server_name: str = ""  # the name in that certificate, when it is not the address's host
    tls_cert_file: str = ""  # mTLS: this client's certificate (chain) ...
    tls_key_file: str = ""  # ... and its private key
    api_key_file: str = ""  # Temporal Cloud and clusters that take API keys (implies TLS)
    encryption_key_files: tuple[str, ...] = ()  # payload keys: the first encrypts, all decrypt

    @property
    def uses_tls(self) -> bool:
        """TLS is asked for, or implied by a TLS file or an API key (never sent in clear)."""
        return bool(
            self.tls or self.tls_ca_file or self.tls_cert_file or self.tls_key_file or self.tls_server_name
            or self.api_key_file
        )  # fmt: skip


@dataclass(frozen=True)
class GatewayConfig:
    mx: tuple[str, ...] = ("a2681.mx.srv.dfn.de", "b2681.mx.srv.dfn.de", "c2681.mx.srv.dfn.de")
    mx_preference: int = 10
    legacy_preference: int = 5
    smtp_port: int = 25
    networks: tuple[str, ...] = (
        "130.83.156.224/27",
        "130.83.252.128/26",
        "2001:41b8:83f:1610::/64",
        "2001:41b8:83f:1611::/64",
    )
    relay: HostPort = HostPort("mailout.hrz.tu-darmstadt.de", 25)
    relay_internal: HostPort = HostPort("mailout-intern.hrz.tu-darmstadt.de", 25)
    relay_unsecure: HostPort = HostPort("mailout-unsecure.hrz.tu-darmstadt.de", 25)
    internal_relay_addresses: tuple[str, ...] = ("130.83.157.89", "2001:41b8:83f:1608::25:3")
    spf_include: str = "_spf.tu-darmstadt.de"
    probe_rate: float = 10.0  # RCPTs a second at most when the Whitelist is checked at the gateway

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
    resolvers: tuple[HostPort, ...] = ()
    tsig_keyfile: str = ""
    timeout: float = 3.0
    zones: tuple[ZoneConfig, ...] = ()

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
    mode: str = "manual"
    url: str = "https://www-cgi.hrz.tu-darmstadt.de/mail/"
    domain_form: str = "antrag-maildomain.php"
    tsl_form: str = "antrag-tsl.php"
    wl_form: str = "antrag-wl.php"
    unsecure_form: str = ""  # the MailOut-Unsecure list has no form of its own: the web interface
    credentials_env: str = ""  # name of an environment variable holding a bearer token
    credentials_file: str = ""  # or a file holding it
    allow_plain_http: bool = False  # send the token over http:// to a host that is not loopback
    timeout: float = 30.0

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
    helo: str = ""  # empty: this machine's FQDN
    ca_file: str = ""  # extra CA for STARTTLS verification (tests, private CAs)
    timeout: float = 30.0


@dataclass(frozen=True)
class NotifyConfig:
    """E-mail to a move's contact: a person's step waiting, overdue, the move done.

    Off until `sender` is set: the gateway wants an envelope sender that receives mail."""

    sender: str = ""  # e.g. "mailmove@hrz.tu-darmstadt.de"
    relay: HostPort | None = None  # None: gateway.relay_internal (campus, TLS, no entry needed)
    dashboard_url: str = ""  # e.g. "https://mailmove.hrz.tu-darmstadt.de/": links in the mails


@dataclass(frozen=True)
class CheckConfig:
    """`mailmove check`: where it looks (ports a test or a lab may move) and when it warns."""

    smtp_port: int = 25  # a server's SMTP port for the STARTTLS check
    mta_sts_port: int = 443  # https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461)
    certificate_days: int = 14  # a certificate expiring sooner is a warning
    timeout: float = 10.0  # per SMTP dialogue and policy fetch


@dataclass(frozen=True)
class AgentConfig:
    """The host agent on a mail server: how it reaches nftables and Postfix there, and the
    networks it opens tcp/25 to at most, whoever schedules its activities.

    Commands are lists, so a prefix works: `["sudo", "nft"]`, `["postconf", "-c", "/etc/postfix"]`.
    """

    nft: tuple[str, ...] = ("nft",)
    nft_table: str = "inet filter"
    nft_input_chain: str = "input"
    nft_output_chain: str = "output"
    postconf: tuple[str, ...] = ("postconf",)
    allowed_networks: tuple[str, ...] = ()  # empty: gateway.networks and gateway.internal_relay_addresses


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/mailmove.db"

    @property
    def shown(self) -> str:
        """The URL with its password, if it has one, masked: for output and identities."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user, _, host = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


@dataclass(frozen=True)
class DashboardConfig:
    listen: HostPort = HostPort("127.0.0.1", 8080)
    # identity from a reverse proxy's header: only when named, only from these addresses
    proxy_header: str = ""
    trusted_proxies: tuple[str, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)  # user -> viewer|operator|admin (proxy users)
    operator_domains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # user -> their domains
    secure_cookies: bool = False  # true behind TLS: the session cookie is then `Secure`
    # origins of the Temporal UI that may call the codec endpoint (/codec) from a browser;
    # empty: the embedded UI of `mailmove up`
    codec_origins: tuple[str, ...] = ()
    session_secret_file: str = ""  # empty: var/dashboard-secret, made on first start
    max_body: int = 1 << 20  # a request body larger than this is refused (413) before it is read
    # a browser session ends after this long unused, and this long after its login in any case
    session_idle: float = 2 * 3600.0
    session_absolute: float = 12 * 3600.0
    login_token_ttl: float = 3600.0  # the one-time login token of `mailmove up` expires unused after this
    # OIDC login (production): the issuer, this client, its secret by reference
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_env: str = ""
    oidc_client_secret_file: str = ""
    oidc_name_claim: str = "preferred_username"

    def grant(self, name: str) -> tuple[str, tuple[str, ...]]:
        """The role and domains this configuration gives a proxy or OIDC user (default: viewer)."""
        return self.roles.get(name, "viewer"), tuple(self.operator_domains.get(name, ()))

    def oidc_secret(self) -> str:
        if self.oidc_client_secret_file:
            return Path(self.oidc_client_secret_file).read_text().strip()
        return os.environ.get(self.oidc_client_secret_env, "") if self.oidc_client_secret_env else ""


@dataclass(frozen=True)
class Settings:
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    timing: Timings = field(default_factory=Timings)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    var_dir: Path = Path("var")
    source: Path | None = None

    def tsig_keys(self) -> dict[str, TsigKey]:
        if not self.dns.tsig_keyfile:
            return {}
        return read_tsig_keyfile(Path(self.dns.tsig_keyfile))


def _table(raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    return value


def _check_keys(table: dict, allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    return tuple(value)


def _int(value: Any, key: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}")
    return value


_NFT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")  # a plain identifier: nothing nft would parse


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


def _no_nul(value: Any, key: str) -> None:
    """A NUL in any value is refused up front: paths, commands and names all end at it in C."""
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nul(v, f"{key}.{k}" if key else str(k))
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


def _resolve_path(value: str, base: Path) -> str:
    return str((base / value).resolve()) if value and not Path(value).is_absolute() else value


def parse_settings(raw: dict, base: Path = Path("."), source: Path | None = None) -> Settings:
    """Typed settings from a parsed TOML document; relative paths are relative to `base`."""
    d = Settings()
    _check_keys(raw, set(SECTIONS), "config")
    _no_nul(raw, "")

    t = _table(raw, "temporal")
    _check_keys(t, {f.name for f in fields(TemporalConfig)}, "temporal")
    temporal = TemporalConfig(
        address=str(t.get("address", d.temporal.address)),
        namespace=_identifier(t.get("namespace", d.temporal.namespace), "temporal.namespace"),
        task_queue=_identifier(t.get("task_queue", d.temporal.task_queue), "temporal.task_queue"),
        embedded_listen=parse_host_port(
            t.get("embedded_listen", str(d.temporal.embedded_listen)), 7233, "temporal.embedded_listen"
        ),
        embedded_ui_port=_int(
            t.get("embedded_ui_port", d.temporal.embedded_ui_port), "temporal.embedded_ui_port", 1, 65535
        ),
        tls=_bool(t.get("tls", False), "temporal.tls"),
        tls_server_name=str(t.get("tls_server_name", "")),
        encryption_key_files=tuple(
            _resolve_path(f, base)
            for f in _str_list(t.get("encryption_key_files", []), "temporal.encryption_key_files")
        ),
        **{
            k: _resolve_path(str(t.get(k, "")), base)
            for k in ("tls_ca_file", "tls_cert_file", "tls_key_file", "api_key_file")
        },
    )

    paths = _table(raw, "paths")
    _check_keys(paths, {"var"}, "paths")
    var_dir = Path(_resolve_path(str(paths.get("var", "var")), base))

    db = _table(raw, "database")
    _check_keys(db, {"url"}, "database")
    url = str(db.get("url", d.database.url))
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        # relative SQLite paths are relative to the config file, like every other path
        url = "sqlite:///" + _resolve_path(url[len("sqlite:///") :], base)

    g = _table(raw, "gateway")
    gk = {f.name for f in fields(GatewayConfig)}
    _check_keys(g, gk, "gateway")
    gateway = GatewayConfig(
        mx=tuple(h.rstrip(".").lower() for h in _str_list(g.get("mx", list(d.gateway.mx)), "gateway.mx")),
        mx_preference=_int(g.get("mx_preference", d.gateway.mx_preference), "gateway.mx_preference", 0, 65535),
        legacy_preference=_int(
            g.get("legacy_preference", d.gateway.legacy_preference), "gateway.legacy_preference", 0, 65535
        ),
        smtp_port=_int(g.get("smtp_port", d.gateway.smtp_port), "gateway.smtp_port", 1, 65535),
        networks=_networks(g.get("networks", list(d.gateway.networks)), "gateway.networks"),
        relay=parse_host_port(g.get("relay", str(d.gateway.relay)), 25, "gateway.relay"),
        relay_internal=parse_host_port(
            g.get("relay_internal", str(d.gateway.relay_internal)), 25, "gateway.relay_internal"
        ),
        relay_unsecure=parse_host_port(
            g.get("relay_unsecure", str(d.gateway.relay_unsecure)), 25, "gateway.relay_unsecure"
        ),
        internal_relay_addresses=_networks(
            g.get("internal_relay_addresses", list(d.gateway.internal_relay_addresses)),
            "gateway.internal_relay_addresses",
        ),
        spf_include=str(g.get("spf_include", d.gateway.spf_include)),
        probe_rate=_rate(g.get("probe_rate", d.gateway.probe_rate), "gateway.probe_rate"),
    )
    if not gateway.mx:
        raise ConfigError("gateway.mx", "must name at least one host")

    n = _table(raw, "dns")
    _check_keys(n, {"resolvers", "tsig_keyfile", "timeout", "zones"}, "dns")
    zones = []
    for name, z in _table(n, "zones").items():
        prefix = f'dns.zones."{name}"'
        if not isinstance(z, dict):
            raise ConfigError(prefix, "must be a table")
        _check_keys(z, {"authoritative", "update_server", "tsig_key"}, prefix)
        zones.append(
            ZoneConfig(
                name=name.rstrip(".").lower(),
                authoritative=tuple(
                    parse_host_port(a, 53, f"{prefix}.authoritative")
                    for a in _str_list(z.get("authoritative", []), f"{prefix}.authoritative")
                ),
                update_server=parse_host_port(z["update_server"], 53, f"{prefix}.update_server")
                if z.get("update_server")
                else None,
                tsig_key=str(z.get("tsig_key", "")),
            )
        )
    dns = DnsConfig(
        resolvers=tuple(
            parse_host_port(r, 53, "dns.resolvers") for r in _str_list(n.get("resolvers", []), "dns.resolvers")
        ),
        tsig_keyfile=_resolve_path(str(n.get("tsig_keyfile", "")), base),
        timeout=parse_duration(n.get("timeout", d.dns.timeout), "dns.timeout"),
        zones=tuple(zones),
    )

    p = _table(raw, "portal")
    _check_keys(p, {f.name for f in fields(PortalConfig)}, "portal")
    portal = PortalConfig(
        mode=str(p.get("mode", d.portal.mode)),
        url=str(p.get("url", d.portal.url)),
        domain_form=str(p.get("domain_form", d.portal.domain_form)),
        tsl_form=str(p.get("tsl_form", d.portal.tsl_form)),
        wl_form=str(p.get("wl_form", d.portal.wl_form)),
        unsecure_form=str(p.get("unsecure_form", d.portal.unsecure_form)),
        credentials_env=str(p.get("credentials_env", "")),
        credentials_file=_resolve_path(str(p.get("credentials_file", "")), base),
        timeout=parse_duration(p.get("timeout", d.portal.timeout), "portal.timeout"),
        allow_plain_http=_bool(p.get("allow_plain_http", False), "portal.allow_plain_http"),
    )
    if portal.mode not in ("manual", "http"):
        raise ConfigError("portal.mode", f"{portal.mode!r} is neither 'manual' nor 'http'")
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

    s = _table(raw, "smtp")
    _check_keys(s, {f.name for f in fields(SmtpConfig)}, "smtp")
    smtp = SmtpConfig(
        helo=str(s.get("helo", "")),
        ca_file=_resolve_path(str(s.get("ca_file", "")), base),
        timeout=parse_duration(s.get("timeout", d.smtp.timeout), "smtp.timeout"),
    )

    tm = _table(raw, "timing")
    _check_keys(tm, {f.name for f in fields(Timings)}, "timing")
    timing = Timings(**{k: parse_duration(v, f"timing.{k}") for k, v in tm.items()})

    dash = _table(raw, "dashboard")
    _check_keys(dash, {f.name for f in fields(DashboardConfig)}, "dashboard")
    roles = {str(k): str(v) for k, v in _table(dash, "roles").items()}
    for user, role in roles.items():
        if role not in ("viewer", "operator", "admin"):
            raise ConfigError(f'dashboard.roles."{user}"', f"{role!r} is not viewer, operator or admin")
    dashboard = DashboardConfig(
        listen=parse_host_port(dash.get("listen", str(d.dashboard.listen)), 8080, "dashboard.listen"),
        proxy_header=str(dash.get("proxy_header", "")),
        trusted_proxies=_str_list(dash.get("trusted_proxies", []), "dashboard.trusted_proxies"),
        roles=roles,
        operator_domains={
            str(k): _str_list(v, f'dashboard.operator_domains."{k}"')
            for k, v in _table(dash, "operator_domains").items()
        },
        secure_cookies=bool(dash.get("secure_cookies", False)),
        codec_origins=_str_list(dash.get("codec_origins", []), "dashboard.codec_origins")
        or (
            ()
            if temporal.address
            else tuple(
                f"http://{host}:{temporal.embedded_ui_port}"
                for host in sorted({temporal.embedded_listen.host, "localhost"})
            )
        ),
        session_secret_file=_resolve_path(str(dash.get("session_secret_file", "")), base),
        max_body=parse_size(dash.get("max_body", d.dashboard.max_body), "dashboard.max_body"),
        **{
            key: _positive_duration(dash.get(key, getattr(d.dashboard, key)), f"dashboard.{key}")
            for key in ("session_idle", "session_absolute", "login_token_ttl")
        },
        oidc_issuer=str(dash.get("oidc_issuer", "")),
        oidc_client_id=str(dash.get("oidc_client_id", "")),
        oidc_client_secret_env=str(dash.get("oidc_client_secret_env", "")),
        oidc_client_secret_file=_resolve_path(str(dash.get("oidc_client_secret_file", "")), base),
        oidc_name_claim=str(dash.get("oidc_name_claim", "preferred_username")),
    )
    if dashboard.oidc_issuer and not dashboard.oidc_client_id:
        raise ConfigError("dashboard.oidc_client_id", "is required with dashboard.oidc_issuer")
    if dashboard.proxy_header and not dashboard.trusted_proxies:
        raise ConfigError("dashboard.trusted_proxies", "name the proxy's addresses when proxy_header is set")

    ag = _table(raw, "agent")
    _check_keys(ag, {f.name for f in fields(AgentConfig)}, "agent")
    agent = AgentConfig(
        nft=_str_list(ag.get("nft", list(d.agent.nft)), "agent.nft") or d.agent.nft,
        nft_table=str(ag.get("nft_table", d.agent.nft_table)),
        nft_input_chain=str(ag.get("nft_input_chain", d.agent.nft_input_chain)),
        nft_output_chain=str(ag.get("nft_output_chain", d.agent.nft_output_chain)),
        postconf=_str_list(ag.get("postconf", list(d.agent.postconf)), "agent.postconf") or d.agent.postconf,
        allowed_networks=_networks(ag.get("allowed_networks", []), "agent.allowed_networks"),
    )
    family, _, table = agent.nft_table.partition(" ")
    if family not in ("ip", "ip6", "inet") or not _NFT_NAME.fullmatch(table):
        raise ConfigError("agent.nft_table", f"{agent.nft_table[:60]!r} is not 'FAMILY NAME', e.g. 'inet filter'")
    for key in ("nft_input_chain", "nft_output_chain"):
        if not _NFT_NAME.fullmatch(getattr(agent, key)):
            raise ConfigError(f"agent.{key}", f"{getattr(agent, key)[:60]!r} is not a plain chain name")

    c = _table(raw, "check")
    _check_keys(c, {f.name for f in fields(CheckConfig)}, "check")
    check = CheckConfig(
        smtp_port=_int(c.get("smtp_port", d.check.smtp_port), "check.smtp_port", 1, 65535),
        mta_sts_port=_int(c.get("mta_sts_port", d.check.mta_sts_port), "check.mta_sts_port", 1, 65535),
        certificate_days=_int(c.get("certificate_days", d.check.certificate_days), "check.certificate_days", 0, 3650),
        timeout=parse_duration(c.get("timeout", d.check.timeout), "check.timeout"),
    )

    n = _table(raw, "notify")
    _check_keys(n, {f.name for f in fields(NotifyConfig)}, "notify")
    sender = str(n.get("sender", "")).strip()
    if sender and "@" not in sender:
        raise ConfigError("notify.sender", f"{sender!r} is not an e-mail address")
    notify = NotifyConfig(
        sender=sender,
        relay=parse_host_port(n["relay"], 25, "notify.relay") if n.get("relay") else None,
        dashboard_url=str(n.get("dashboard_url", "")),
    )

    return Settings(
        temporal=temporal,
        database=DatabaseConfig(url),
        gateway=gateway,
        dns=dns,
        portal=portal,
        smtp=smtp,
        timing=timing,
        dashboard=dashboard,
        agent=agent,
        check=check,
        notify=notify,
        var_dir=var_dir,
        source=source,
    )


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
