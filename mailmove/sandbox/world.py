"""The whole local world of a demo or a test, and the mailmove configuration pointing at it.

A department zone (the legacy mail host, a new server `mx2` with matching reverse DNS and a
server `mx3` whose PTR names another host), the reverse zone of 127.0.0.0/8, a zone for the
gateway's MX hosts and relays; BIND primary/secondary/resolver serving them, the portal
stand-in, the gateway SMTP stand-in and the three relays, whose `mailout` relays only for
addresses on a confirmed TrustedServerList entry, and `mx2`'s own MTA with STARTTLS on its
address 127.0.0.2. Nothing listens beyond loopback and every port is chosen at run time.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trustme

from mailmove.base.vocabulary import PortalMode, RelayScope, Request
from mailmove.sandbox.bind import DnsWorld, Zone, free_port
from mailmove.sandbox.portal import PortalServer, Registry
from mailmove.sandbox.smtp import GatewayHandler, RelayHandler, SmtpServer

GATEWAY_ZONE = "gw.sandbox.test"
GATEWAY_MX = [f"{x}2681.mx.{GATEWAY_ZONE}" for x in "abc"]
RELAYS = {
    RelayScope.EXTERNAL: f"mailout.{GATEWAY_ZONE}",
    RelayScope.INTERNAL: f"mailout-intern.{GATEWAY_ZONE}",
    RelayScope.UNSECURE: f"mailout-unsecure.{GATEWAY_ZONE}",
}
# the gateway's networks as its SPF record lists them (the default profile's; never reached)
GATEWAY_SPF = "ip4:130.83.156.224/27 ip4:130.83.252.128/26 ip6:2001:41b8:83f:1610::/63"
# the department's servers: the old one, a new one with matching reverse DNS, one without
SERVERS = {"mail": "127.0.0.1", "mx2": "127.0.0.2", "mx3": "127.0.0.3"}
PTR_OF = {"mx3": "www"}  # mx3's address points back at another name


def department_zone(domain: str, ttl: int, legacy: str = "mail") -> Zone:
    return Zone(
        domain,
        [
            "@ NS ns1",
            "@ NS ns2",
            "ns1 A 127.0.0.1",
            "ns2 A 127.0.0.1",
            f"@ MX 10 {legacy}",
            *(f"{name} A {address}" for name, address in SERVERS.items()),
            "www A 127.0.0.1",
        ],
        ttl=ttl,
        negative_ttl=ttl,
    )


def reverse_zone(domain: str) -> Zone:
    return Zone(
        "127.in-addr.arpa",
        [
            "@ NS localhost.",
            *(
                f"{'.'.join(reversed(address.split('.')[1:]))} PTR {PTR_OF.get(name, name)}.{domain}."
                for name, address in SERVERS.items()
            ),
        ],
        ttl=300,
    )


def gateway_zone() -> Zone:
    return Zone(
        GATEWAY_ZONE,
        [
            "@ NS ns1",
            "ns1 A 127.0.0.1",
            *(f"{h.split('.')[0]}.mx A 127.0.0.1" for h in GATEWAY_MX),
            *(f"{h.split('.')[0]} A 127.0.0.1" for h in RELAYS.values()),
            f'_spf TXT "v=spf1 {GATEWAY_SPF} -all"',  # what departments include in their SPF
        ],
        ttl=300,
    )


@dataclass
class SandboxOptions:
    domains: tuple[str, ...] = ("chem.sandbox.test",)
    ttl: int = 3  # seconds: every wait of a demo stays short
    notify: str | int = "now"
    confirm_after: float = 3.0
    secondaries: int = 1
    root: Path | None = None


class Sandbox:
    def __init__(self, options: SandboxOptions = SandboxOptions()):
        self.options = options
        self.root = Path(options.root or tempfile.mkdtemp(prefix="mailmove-sandbox-"))
        self.dns = DnsWorld(
            [department_zone(d, options.ttl) for d in options.domains]
            + [reverse_zone(options.domains[0]), gateway_zone()],
            root=self.root / "dns",
            notify=options.notify,
            secondaries=options.secondaries,
        )
        self.registry = Registry(confirm_after=options.confirm_after)
        self.portal = PortalServer(self.registry)
        self.ca = trustme.CA()
        self.ca_file = self.root / "tls" / "sandbox-ca.pem"
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        registered = GatewayHandler(self.registry.accepts)
        self.smtp = SmtpServer(registered, self.ca, GATEWAY_MX)
        self.relays = {
            RelayScope.EXTERNAL: SmtpServer(
                RelayHandler(lambda peer, helo: self.registry.listed(Request.TSL, peer)),
                self.ca,
                [RELAYS[RelayScope.EXTERNAL]],
            ),
            RelayScope.INTERNAL: SmtpServer(RelayHandler(), self.ca, [RELAYS[RelayScope.INTERNAL]]),
            RelayScope.UNSECURE: SmtpServer(
                RelayHandler(lambda peer, helo: self.registry.listed(Request.UNSECURE, peer)),
                self.ca,
                [RELAYS[RelayScope.UNSECURE]],
                starttls=False,
            ),
        }

        # the new server's own MTA, on its own address, for `mailmove check --server`
        domain = options.domains[0]
        self.department = SmtpServer(RelayHandler(), self.ca, [f"mx2.{domain}"], host=SERVERS["mx2"])

    def start(self) -> Sandbox:
        self.started_at = datetime.now(UTC)
        self.dns.start()
        self.portal.start()
        for server in (self.smtp, *self.relays.values(), self.department):
            server.start()
        return self

    def stop(self) -> None:
        for part in (self.smtp, *self.relays.values(), self.department, self.portal, self.dns):
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                pass

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def config(
        self,
        database_url: str | None = None,
        temporal_address: str = "",
        task_queue: str = "mailmove",
        portal_mode: str = PortalMode.HTTP,
        timing: dict[str, float] | None = None,
        agent: dict[str, list[str]] | None = None,
        notify: bool = False,
        payload_keys: list[str] | None = None,
    ) -> str:
        """A mailmove TOML configuration for this world (the embedded stack unless an address is given)."""
        var = self.root / "var"
        timing = {
            "probe_interval": 2,
            "reminder_interval": 3600,
            "escalate_after": 86400,
            "convergence_window": 10,
            "convergence_poll": 0.25,
            "convergence_pause": 1,
            "centre_poll": 2,
            **(timing or {}),
        }
        authoritative = json.dumps([self.dns.primary.address] + [s.address for s in self.dns.secondaries])
        zones = "".join(
            f'[dns.zones."{d}"]\nauthoritative = {authoritative}\n'
            f'update_server = "{self.dns.primary.address}"\ntsig_key = "{self.dns.key_name}"\n\n'
            for d in self.options.domains
        )
        q = json.dumps
        return (
            f'[temporal]\naddress = {q(temporal_address)}\nnamespace = "default"\ntask_queue = {q(task_queue)}\n'
            + (f"encryption_key_files = {q(payload_keys)}\n" if payload_keys else "")
            + f'embedded_listen = "127.0.0.1:{free_port()}"\nembedded_ui_port = {free_port()}\n\n'
            f"[paths]\nvar = {q(str(var))}\n\n"
            f"[database]\nurl = {q(database_url or f'sqlite:///{var}/mailmove.db')}\n\n"
            f"[gateway]\nmx = {q(GATEWAY_MX)}\nsmtp_port = {self.smtp.port}\n"
            f'spf_include = "_spf.{GATEWAY_ZONE}"\n'
            + "".join(
                f"{key} = {q(f'{RELAYS[scope]}:{self.relays[scope].port}')}\n"
                for key, scope in (
                    ("relay", RelayScope.EXTERNAL),
                    ("relay_internal", RelayScope.INTERNAL),
                    ("relay_unsecure", RelayScope.UNSECURE),
                )
            )
            + "\n"
            f"[dns]\nresolvers = [{q(self.dns.resolver.address)}]\ntsig_keyfile = {q(str(self.dns.keyfile))}\n"
            f"timeout = 2\n\n{zones}"
            f"[portal]\nmode = {q(portal_mode)}\nurl = {q(self.portal.url)}\n\n"
            f'[smtp]\nhelo = "probe.sandbox.test"\nca_file = {q(str(self.ca_file))}\ntimeout = 10\n\n'
            "[timing]\n"
            + "".join(f"{k} = {v}\n" for k, v in timing.items())
            + f"\n[check]\nsmtp_port = {self.department.port}\n"
            # contacts' mail goes through the internal relay stand-in, which keeps it
            + ('\n[notify]\nsender = "mailmove@sandbox.test"\n' if notify else "")
            + f'\n[dashboard]\nlisten = "127.0.0.1:{free_port()}"\n'
            + ("\n[agent]\n" + "".join(f"{k} = {q(v)}\n" for k, v in agent.items()) if agent else "")
        )

    def write_config(self, path: Path | None = None, **kwargs) -> Path:
        path = path or self.root / "mailmove.toml"
        path.write_text(self.config(**kwargs))
        return path
