"""A campus of zones for `mailmove survey`, served by a real BIND: every class in numbers, and
the ways DNS breaks (a lame server, a zone that fails to load, a server that never answers)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailmove.base import ids
from mailmove.base.config import Settings, parse_settings
from mailmove.base.vocabulary import Kind, MoveState, Stage, SurveyClass
from mailmove.sandbox.bind import DnsWorld, Zone, free_port
from mailmove.sandbox.world import GATEWAY_MX, GATEWAY_ZONE, gateway_zone
from mailmove.store.db import ready
from mailmove.store.models import Migration

PARENT = "survey.test"
CAMPUS = "campus.test"  # read by AXFR
GATEWAY = [f"@ MX 10 {h}." for h in GATEWAY_MX]
INCLUDE = f"_spf.{GATEWAY_ZONE}"
SPF_GATEWAY = f'@ TXT "v=spf1 mx include:{INCLUDE} -all"'
SPF_OWN = '@ TXT "v=spf1 mx -all"'
DMARC = '_dmarc TXT "v=DMARC1; p=reject"'
# Rich markup and an escape sequence in a TXT record (\027 is ESC in a master file)
HOSTILE_SPF = '@ TXT "v=spf1 [b]x[/b] \\027[31mred -all"'


class Unloadable(Zone):
    """A zone whose master file does not parse: BIND starts without it and answers SERVFAIL."""

    def text(self) -> str:
        return f"$ORIGIN {self.name}.\nthis is not a master file\n"


class CampusWorld(DnsWorld):
    """A DnsWorld whose secondary and resolver are waited for only for the zones that load."""

    def wait_secondary_loaded(self, timeout: float = 10) -> None:
        self._loadable(super().wait_secondary_loaded, timeout)

    def wait_resolver_ready(self, timeout: float = 10) -> None:
        self._loadable(super().wait_resolver_ready, timeout)

    def _loadable(self, wait, timeout: float) -> None:
        zones = self.zones
        self.zones = [z for z in zones if not isinstance(z, Unloadable)]
        try:
            wait(timeout)
        finally:
            self.zones = zones


def zone(name: str, *records: str) -> Zone:
    return Zone(f"{name}.{PARENT}", ["@ NS ns1", "ns1 A 127.0.0.1", "mail A 127.0.0.1", *records], ttl=300)


@dataclass
class Campus:
    zones: list[Zone] = field(default_factory=list)
    expected: dict[str, SurveyClass] = field(default_factory=dict)  # domain -> class

    def add(self, cls: SurveyClass, name: str, *records: str) -> str:
        self.zones.append(zone(name, *records))
        self.expected[f"{name}.{PARENT}"] = cls
        return f"{name}.{PARENT}"


def campus(scale: int = 10) -> Campus:
    """About 21 zones for each `scale`, every class among them, and the special cases once."""
    c = Campus()
    for i in range(6 * scale):
        spf = SPF_GATEWAY if i % 6 else SPF_OWN  # every sixth does not cover the gateway
        c.add(SurveyClass.BEHIND, f"b{i:03}", *GATEWAY, spf, *([DMARC] if i % 4 else []))
    for i in range(6 * scale):
        c.add(SurveyClass.NOT_YET, f"n{i:03}", "@ MX 10 mail", "@ MX 20 mx2", "mx2 A 127.0.0.2", SPF_OWN, DMARC)
    for i in range(4 * scale):
        c.add(SurveyClass.PARTLY, f"p{i:03}", *GATEWAY, "@ MX 5 mail", SPF_GATEWAY)
    for i in range(2 * scale):
        c.add(SurveyClass.NO_MAIL, f"z{i:03}", "@ MX 0 .", '@ TXT "v=spf1 -all"')
    for i in range(scale):
        c.add(SurveyClass.NO_MAIL, f"e{i:03}", '@ TXT "nothing here"')
        c.add(SurveyClass.NOT_YET, f"i{i:03}", "@ A 127.0.0.1")  # implicit MX: not in a wave
    c.add(SurveyClass.PARTLY, "some", GATEWAY[0])  # one gateway host of three
    c.add(SurveyClass.NOT_YET, "dane", "@ MX 10 mail", "_25._tcp.mail TLSA 3 1 1 " + "ab" * 32)
    c.add(SurveyClass.NOT_YET, "sts", "@ MX 10 mail", '_mta-sts TXT "v=STSv1; id=1"', "mta-sts A 127.0.0.1")
    c.add(SurveyClass.NOT_YET, "hostile", "@ MX 10 mail", HOSTILE_SPF)
    c.add(SurveyClass.PARTLY, "moved", "@ MX 10 mail")  # the store says its move is done
    c.add(SurveyClass.NOT_YET, "moving", "@ MX 10 mail")  # the store says it is moving: not in a wave
    c.add(SurveyClass.BROKEN, "lame", "@ MX 10 mail")  # one of its servers is a resolver
    c.add(SurveyClass.BROKEN, "slow", "@ MX 10 mail")  # its server never answers
    c.zones.append(Unloadable(f"servfail.{PARENT}", []))
    c.expected[f"servfail.{PARENT}"] = SurveyClass.BROKEN
    c.expected[f"ghost.{PARENT}"] = SurveyClass.BROKEN  # no such zone
    c.zones.append(
        Zone(
            CAMPUS,
            [
                "@ NS ns1",
                "ns1 A 127.0.0.1",
                "@ MX 10 mail",
                "mail A 127.0.0.1",
                "www A 127.0.0.1",
                "lists MX 10 mail",
                'spfonly TXT "v=spf1 -all"',
                'note TXT "not spf"',
                "alias CNAME www",
                '_spf TXT "v=spf1 -all"',
                "*.wild A 127.0.0.1",
            ],
        )  # fmt: skip
    )
    c.zones.append(gateway_zone())
    return c


def silent_server() -> socket.socket:
    """A bound UDP socket that never answers (close it when done)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", free_port()))
    return silent


def keyfile(world: DnsWorld) -> Path:
    """Both keys of the world in one file: `ddns-key` updates, `xfr-key` transfers."""
    path = world.root / "keys.conf"
    path.write_text(world.keyfile.read_text() + (world.root / "xfr-key.conf").read_text())
    return path


def survey_config(
    world: DnsWorld, silent: socket.socket, database: str, *, campus_key: str = "xfr-key", **sections: dict
) -> dict:
    """The configuration of a survey of the world, as the TOML file's tables."""
    servers = [world.primary.address, world.secondary.address]
    special = {
        f"lame.{PARENT}": [world.primary.address, world.resolver.address],
        f"slow.{PARENT}": [f"127.0.0.1:{silent.getsockname()[1]}"],
    }
    zones = {
        z.name: {
            "authoritative": special.get(z.name, servers),
            "update_server": world.primary.address,
            "tsig_key": campus_key if z.name == CAMPUS else "ddns-key",
        }
        for z in world.zones
    }
    dns = {"resolvers": [world.resolver.address], "timeout": 1, "tsig_keyfile": str(keyfile(world)), "zones": zones}
    return {
        "gateway": {"mx": GATEWAY_MX, "spf_include": INCLUDE},
        "dns": dns,
        "database": {"url": database},
        **sections,
    }


def survey_settings(world: DnsWorld, silent: socket.socket, database: str, **options) -> Settings:
    return parse_settings(survey_config(world, silent, database, **options))


def write_toml(path: Path, raw: dict) -> Path:
    """`raw` as a TOML file: tables of JSON-valued keys (JSON's strings, numbers and lists are TOML's)."""
    lines: list[str] = []

    def table(name: str, values: dict) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict))
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{json.dumps(k)}", v)

    for name, values in raw.items():
        table(name, values)
    path.write_text("\n".join(lines) + "\n")
    return path


def record_moves(database: str) -> None:
    """The store's word on two domains: the move of `moved` is done, `moving`'s runs."""
    now = datetime.now(UTC)
    with ready(database).begin() as session:
        for name, state, stage in (
            ("moved", MoveState.DONE, Stage.DONE),
            ("moving", MoveState.RUNNING, Stage.PREFLIGHT),
        ):
            domain = f"{name}.{PARENT}"
            session.merge(
                Migration(
                    workflow_id=ids.workflow_id(Kind.DOMAIN, domain),
                    kind=Kind.DOMAIN,
                    subject=domain,
                    stage=stage,
                    state=state,
                    attention=False,
                    created_at=now,
                    updated_at=now,
                )  # fmt: skip
            )
