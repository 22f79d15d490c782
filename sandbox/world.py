"""The whole local world of a demo or a test, and the mailmove configuration pointing at it.

A department zone (with the legacy mail host), a zone for the gateway's MX hosts, BIND
primary/secondary/resolver serving both, the portal stand-in and the gateway SMTP
stand-in. Nothing listens beyond 127.0.0.1 and every port is chosen at run time.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.bind import DnsWorld, Zone, free_port
from sandbox.gateway_smtp import GatewaySmtp
from sandbox.portal import PortalServer, Registry

GATEWAY_ZONE = "gw.sandbox.test"
GATEWAY_MX = [f"{x}2681.mx.{GATEWAY_ZONE}" for x in "abc"]


def department_zone(domain: str, ttl: int, legacy: str = "mail") -> Zone:
    return Zone(
        domain,
        [
            "@ NS ns1",
            "@ NS ns2",
            "ns1 A 127.0.0.1",
            "ns2 A 127.0.0.1",
            f"@ MX 10 {legacy}",
            f"{legacy} A 127.0.0.1",
            "www A 127.0.0.1",
        ],
        ttl=ttl,
        negative_ttl=ttl,
    )


def gateway_zone() -> Zone:
    return Zone(
        GATEWAY_ZONE,
        ["@ NS ns1", "ns1 A 127.0.0.1", *(f"{h.split('.')[0]}.mx A 127.0.0.1" for h in GATEWAY_MX)],
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
            [department_zone(d, options.ttl) for d in options.domains] + [gateway_zone()],
            root=self.root / "dns",
            notify=options.notify,
            secondaries=options.secondaries,
        )
        self.registry = Registry(confirm_after=options.confirm_after)
        self.portal = PortalServer(self.registry)
        self.smtp = GatewaySmtp(
            GATEWAY_MX, lambda rcpt: self.registry.registered(rcpt.rpartition("@")[2].lower()), self.root / "tls"
        )

    def start(self) -> Sandbox:
        self.dns.start()
        self.portal.start()
        self.smtp.start()
        return self

    def stop(self) -> None:
        for part in (self.smtp, self.portal, self.dns):
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
        portal_mode: str = "http",
        timing: dict[str, float] | None = None,
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
            f'embedded_listen = "127.0.0.1:{free_port()}"\nembedded_ui_port = {free_port()}\n\n'
            f"[paths]\nvar = {q(str(var))}\n\n"
            f"[database]\nurl = {q(database_url or f'sqlite:///{var}/mailmove.db')}\n\n"
            f"[gateway]\nmx = {q(GATEWAY_MX)}\nsmtp_port = {self.smtp.port}\n\n"
            f"[dns]\nresolvers = [{q(self.dns.resolver.address)}]\ntsig_keyfile = {q(str(self.dns.keyfile))}\n"
            f"timeout = 2\n\n{zones}"
            f"[portal]\nmode = {q(portal_mode)}\nurl = {q(self.portal.url)}\n\n"
            f'[smtp]\nhelo = "probe.sandbox.test"\nca_file = {q(str(self.smtp.ca_file))}\ntimeout = 10\n\n'
            "[timing]\n"
            + "".join(f"{k} = {v}\n" for k, v in timing.items())
            + f'\n[dashboard]\nlisten = "127.0.0.1:{free_port()}"\n'
        )

    def write_config(self, path: Path | None = None, **kwargs) -> Path:
        path = path or self.root / "mailmove.toml"
        path.write_text(self.config(**kwargs))
        return path
