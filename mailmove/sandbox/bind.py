"""A real DNS world on loopback: BIND 9 primary, secondary and caching resolver.

The primary accepts RFC 2136 updates signed with a TSIG key made by `tsig-keygen` and
NOTIFYs the secondary (immediately, after `notify_delay` seconds, or never: then a test
sends the NOTIFY itself, for a deterministic lag). The resolver forwards the zones to the
primary and caches what it is told, exactly as a resolver on the Internet would.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype

from mailmove.base import processes

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now.

    Chosen below the kernel's ephemeral range, so that no outgoing connection or `bind(0)`
    takes it before its server binds it, and never handed out twice by this process (a world
    picks all its ports before it starts its servers).
    """
    low = _ephemeral_low()
    while True:
        port = random.randrange(10000, low)
        if port in _HANDED_OUT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _HANDED_OUT.add(port)
        return port


def named_binary() -> str:
    path = shutil.which("named") or "/usr/sbin/named"
    if not Path(path).exists():
        raise RuntimeError("BIND's `named` is not installed (Debian: apt-get install bind9 bind9-dnsutils)")
    return path


def make_tsig_key(path: Path, name: str) -> Path:
    tool = shutil.which("tsig-keygen") or "/usr/sbin/tsig-keygen"
    path.write_text(
        subprocess.run([tool, "-a", "hmac-sha256", name], check=True, capture_output=True, text=True).stdout
    )
    return path


@dataclass
class Zone:
    """A zone's file content; `$TTL` and the SOA are written from these fields."""

    name: str
    records: list[str]
    ttl: int = 300
    negative_ttl: int = 60
    serial: int = 1

    def text(self) -> str:
        return "\n".join(
            [
                f"$ORIGIN {self.name}.",
                f"$TTL {self.ttl}",
                f"@ IN SOA ns1.{self.name}. hostmaster.{self.name}. {self.serial} 60 30 3600 {self.negative_ttl}",
                *self.records,
                "",
            ]
        )


@dataclass
class Named:
    """One `named -g` process in a directory of its own."""

    role: str
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self, conf: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "named.conf").write_text(conf)
        log = open(self.directory / "named.log", "ab")
        self.process = subprocess.Popen(
            [named_binary(), "-g", "-c", str(self.directory / "named.conf")], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"named ({self.role}) exited: {(self.directory / 'named.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"named ({self.role}) did not answer on port {self.port}")

    def stop(self) -> None:
        processes.stop(self.process, 5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _options(directory: Path, port: int, extra: str) -> str:
    return f"""options {{
  directory "{directory}"; pid-file "named.pid"; session-keyfile "session.key";
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  dnssec-validation no; notify-source 127.0.0.1; transfer-source 127.0.0.1;
  {extra}
}};
controls {{ }};
"""


class DnsWorld:
    """Primary + secondary + caching resolver serving `zones`, all on free loopback ports.

    `notify`: "now" (NOTIFY at once), a number of seconds (BIND's notify-delay), or "off"
    (the secondary stays stale until `send_notify`).
    """

    def __init__(
        self,
        zones: list[Zone],
        root: Path | None = None,
        notify: str | int = "now",
        key_name: str = "ddns-key",
        secondaries: int = 1,
    ):
        self.zones = zones
        self.root = Path(root or tempfile.mkdtemp(prefix="mailmove-dns-"))
        self.notify = notify
        self.key_name = key_name
        self.primary = Named("primary", self.root / "primary")
        self.secondaries = [
            Named(
                "secondary" if i == 0 else f"secondary{i + 1}",
                self.root / ("secondary" if i == 0 else f"secondary{i + 1}"),
            )
            for i in range(secondaries)
        ]
        self.resolver = Named("resolver", self.root / "resolver")

    @property
    def secondary(self) -> Named:
        return self.secondaries[0]

    @property
    def keyfile(self) -> Path:
        return self.root / f"{self.key_name}.conf"

    def start(self) -> DnsWorld:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.keyfile.exists():
            make_tsig_key(self.keyfile, self.key_name)
            make_tsig_key(self.root / "xfr-key.conf", "xfr-key")
        self.primary.directory.mkdir(parents=True, exist_ok=True)
        for zone in self.zones:
            (self.primary.directory / f"{zone.name}.db").write_text(zone.text())
        if self.notify == "off":
            notify = "notify no;"
        else:
            delay = 0 if self.notify == "now" else int(self.notify)
            targets = " ".join(f"127.0.0.1 port {s.port};" for s in self.secondaries)
            notify = f"notify explicit; also-notify {{ {targets} }}; notify-delay {delay};"
        keys = f'include "{self.keyfile}"; include "{self.root / "xfr-key.conf"}";\n'
        self.primary.start(
            keys
            + _options(self.primary.directory, self.primary.port, f"recursion no; {notify}")
            + "".join(
                f'zone "{z.name}" {{ type primary; file "{z.name}.db"; '
                f"update-policy {{ grant {self.key_name} zonesub ANY; }}; allow-transfer {{ key xfr-key; }}; }};\n"
                for z in self.zones
            )
        )
        for secondary in self.secondaries:
            secondary.start(
                keys
                # many zones (a wave's) load in seconds, not at BIND's default 20 refresh queries a second
                + _options(
                    secondary.directory,
                    secondary.port,
                    "recursion no; notify no; transfers-in 100; serial-query-rate 1000;",
                )
                + "server 127.0.0.1 { keys { xfr-key; }; };\n"
                + "".join(
                    f'zone "{z.name}" {{ type secondary; primaries {{ 127.0.0.1 port {self.primary.port}; }}; '
                    f'allow-notify {{ 127.0.0.1; }}; file "{z.name}.bk"; }};\n'
                    for z in self.zones
                )
            )
        # A root zone of its own: names outside the sandbox get NXDOMAIN here, so the
        # resolver never sends a packet beyond loopback.
        self.resolver.directory.mkdir(parents=True, exist_ok=True)
        (self.resolver.directory / "root.db").write_text(
            "$TTL 300\n. IN SOA localhost. hostmaster.localhost. 1 60 30 3600 60\n. IN NS localhost.\n"
            "localhost. IN A 127.0.0.1\n" + "".join(f"{z.name}. IN NS localhost.\n" for z in self.zones)
            # delegations make the resolver recurse, and so forward, for the sandbox's zones
        )
        self.resolver.start(
            _options(
                self.resolver.directory,
                self.resolver.port,
                # no built-in empty zones: the sandbox serves 127.in-addr.arpa itself
                # and no cached SERVFAIL: one failure while the world starts must not outlive it
                "recursion yes; allow-recursion { 127.0.0.1; }; notify no; empty-zones-enable no; servfail-ttl 0;",
            )
            + 'zone "." { type primary; file "root.db"; };\n'
            + "".join(
                f'zone "{z.name}" {{ type forward; forward only; forwarders {{ 127.0.0.1 port {self.primary.port}; }}; }};\n'
                for z in self.zones
            )
        )
        self.wait_secondary_loaded()
        self.wait_resolver_ready()
        return self

    def wait_secondary_loaded(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout + 0.05 * len(self.zones)
        for secondary in self.secondaries:
            for zone in self.zones:
                while True:
                    query = dns.message.make_query(zone.name, "SOA")
                    if dns.query.udp(query, "127.0.0.1", port=secondary.port, timeout=1).answer:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{secondary.role} did not load {zone.name}")
                    time.sleep(0.05)

    def wait_resolver_ready(self, timeout: float = 10) -> None:
        """Until the resolver answers for every zone through its forwarder (the primary)."""
        deadline = time.monotonic() + timeout + 0.05 * len(self.zones)
        for zone in self.zones:
            while True:
                try:
                    reply = dns.query.udp(
                        dns.message.make_query(zone.name, "SOA"), "127.0.0.1", port=self.resolver.port, timeout=1
                    )
                    if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                        break
                except dns.exception.Timeout:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the resolver does not answer for {zone.name}")
                time.sleep(0.05)

    def send_notify(self, zone: str) -> None:
        """What the primary would send: makes every secondary transfer the zone now."""
        notify = dns.message.make_query(zone, dns.rdatatype.SOA)
        notify.set_opcode(dns.opcode.NOTIFY)
        notify.flags |= dns.flags.AA
        for secondary in self.secondaries:
            dns.query.udp(notify, "127.0.0.1", port=secondary.port, timeout=2)

    def stop(self) -> None:
        for server in (self.resolver, *self.secondaries, self.primary):
            server.stop()

    def __enter__(self) -> DnsWorld:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
