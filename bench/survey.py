"""Survey benchmark (issue 18). Prints its figures; nothing leaves loopback.

`mailmove survey --json` over `--domains` zones of a local BIND world (primary, secondary,
caching resolver), every server behind a UDP relay of this benchmark that hands each answer
back 20-50 ms later (drawn afresh for each; this kernel has no `tc netem`). Then, over the same
domains and the same delayed resolver, checkdmarc's own command line (`checkdmarc FILE -f json`),
the tool a postmaster would use today. checkdmarc asks port 53 only, so the resolver's relay
listens on port 53 of 127.0.0.77, an address of this benchmark's own (it must run as root).
Reported: wall time and DNS queries a second of each (counted at the relays), the speed-up
(target: at least 10x), and every domain whose SPF or DMARC verdict differs between the two.

Run: .venv/bin/python bench/survey.py [--domains 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailmove.sandbox.bind import DnsWorld, Zone, free_port  # noqa: E402
from mailmove.sandbox.world import GATEWAY_MX, GATEWAY_ZONE, gateway_zone  # noqa: E402

RESOLVER = ("127.0.0.77", 53)  # checkdmarc's: port 53 only
DELAY = (0.020, 0.050)
PARENT = "bench.test"
INCLUDE = f"_spf.{GATEWAY_ZONE}"
GATEWAY = [f"@ MX 10 {h}." for h in GATEWAY_MX]
# (MX records, SPF records, DMARC records) by the domain's number modulo their count
SHAPES = [
    (GATEWAY, [f'@ TXT "v=spf1 include:{INCLUDE} -all"'], ['_dmarc TXT "v=DMARC1; p=reject"']),
    (GATEWAY, ['@ TXT "v=spf1 mx -all"'], []),
    (["@ MX 10 mail"], ['@ TXT "v=spf1 mx a -all"'], ['_dmarc TXT "v=DMARC1; p=none"']),
    (["@ MX 10 mail", "@ MX 20 mx2"], [], ['_dmarc TXT "v=DMARC1; p=quarantine"']),
    ([*GATEWAY, "@ MX 5 mail"], [f'@ TXT "v=spf1 mx include:{INCLUDE} ~all"'], ['_dmarc TXT "v=DMARC1; p=reject"']),
    (["@ MX 0 ."], ['@ TXT "v=spf1 -all"'], ['_dmarc TXT "v=DMARC1; p=reject"']),
    (["@ MX 10 mail"], ['@ TXT "v=spf1 mx -all"', '@ TXT "v=spf1 a -all"'], []),  # two SPF records
    (["@ MX 10 mail"], ['@ TXT "v=spf1 mx bogus:x -all"'], ['_dmarc TXT "v=DMARC1; p=sometimes"']),  # both invalid
]


class Relay(asyncio.DatagramProtocol):
    """Forwards each UDP query to `target` as it is and hands the answer back 20-50 ms later.
    Bytes only, never parsed: the survey sends thousands a second through one event loop."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.forwarded = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, client) -> None:
        self.forwarded += 1
        asyncio.get_running_loop().create_task(self.forward(data, client))

    async def forward(self, data: bytes, client) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.setblocking(False)
            await loop.sock_connect(upstream, self.target)
            await loop.sock_sendall(upstream, data)
            try:
                answer = await asyncio.wait_for(loop.sock_recv(upstream, 65535), 5)
            except TimeoutError:
                return
        await asyncio.sleep(random.uniform(*DELAY))
        self.transport.sendto(answer, client)


def zones(count: int) -> list[Zone]:
    made = []
    for i in range(count):
        mx, spf, dmarc = SHAPES[i % len(SHAPES)]
        records = ["@ NS ns1", "ns1 A 127.0.0.1", "mail A 127.0.0.1", "mx2 A 127.0.0.2", *mx, *spf, *dmarc]
        made.append(Zone(f"d{i:04}.{PARENT}", records))
    return made


def config(world: DnsWorld, resolver: str, authoritative: list[str], database: str) -> str:
    q = json.dumps
    zones_ = "".join(
        f'[dns.zones."{z.name}"]\nauthoritative = {q(authoritative)}\n' for z in world.zones if z.name != GATEWAY_ZONE
    )
    return (
        f"[gateway]\nmx = {q(GATEWAY_MX)}\nspf_include = {q(INCLUDE)}\n\n"
        f"[dns]\nresolvers = [{q(resolver)}]\ntimeout = 2\n\n{zones_}\n"
        f"[database]\nurl = {q(database)}\n"
    )


def checkdmarc_verdict(record: dict) -> str:
    """checkdmarc's SPF or DMARC result in the survey's words: ok, none or invalid."""
    if record.get("valid"):
        return "ok"
    error = str(record.get("error", "")).lower()
    missing = record.get("record") is None and ("does not exist" in error or "not have" in error)
    return "none" if missing else "invalid"


async def timed(*command: str) -> tuple[float, str, str]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    took = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {process.returncode}: {err.decode()[-2000:]}")
    return took, out.decode(), err.decode()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domains", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailmove-bench-survey-"))
    world = DnsWorld([*zones(args.domains), gateway_zone()], root=root / "dns")
    started = time.perf_counter()
    world.start()
    print(f"BIND world of {args.domains} zones started in {time.perf_counter() - started:.1f} s", flush=True)
    loop = asyncio.get_running_loop()
    relays: list[Relay] = []
    transports = []
    try:
        resolver = Relay(("127.0.0.1", world.resolver.port))
        transport, _ = await loop.create_datagram_endpoint(lambda: resolver, local_addr=RESOLVER)
        relays.append(resolver)
        transports.append(transport)
        authoritative = []
        for server in (world.primary, world.secondary):
            relay, port = Relay(("127.0.0.1", server.port)), free_port()
            transport, _ = await loop.create_datagram_endpoint(
                lambda relay=relay: relay, local_addr=("127.0.0.1", port)
            )
            relays.append(relay)
            transports.append(transport)
            authoritative.append(f"127.0.0.1:{port}")
        path = root / "mailmove.toml"
        path.write_text(config(world, f"{RESOLVER[0]}:{RESOLVER[1]}", authoritative, f"sqlite:///{root / 'm.db'}"))
        domains = root / "domains.txt"
        names = [z.name for z in world.zones if z.name != GATEWAY_ZONE]
        domains.write_text("".join(f"{n}\n" for n in names))

        before = sum(r.forwarded for r in relays)
        ours, out, _ = await timed(
            sys.executable, "-m", "mailmove.cli", "--config", str(path), "survey", str(domains), "--json"
        )
        our_queries = sum(r.forwarded for r in relays) - before
        survey = {d["domain"]: d for d in json.loads(out)["domains"]}
        counts = json.loads(out)["counts"]
        print(
            f"mailmove survey:  {ours:7.1f} s, {our_queries} queries ({our_queries / ours:.0f}/s), classes {counts}",
            flush=True,
        )

        before = resolver.forwarded
        theirs, out, _ = await timed(
            str(ROOT / ".venv" / "bin" / "checkdmarc"), str(domains), "-f", "json", "-n", RESOLVER[0], "-t", "2"
        )
        their_queries = resolver.forwarded - before
        checked = {d["domain"]: d for d in json.loads(out)}
        print(f"checkdmarc:       {theirs:7.1f} s, {their_queries} queries ({their_queries / theirs:.0f}/s)")
    finally:
        for transport in transports:
            transport.close()
        world.stop()

    speedup = theirs / ours
    print(f"speed-up {speedup:.1f}x (target >= 10x: {'met' if speedup >= 10 else 'NOT met'})")
    differ = []
    for name in names:
        mine, other = survey[name], checked.get(name, {})
        for kind in ("spf", "dmarc"):
            if mine[kind] != checkdmarc_verdict(other.get(kind, {})):
                differ.append(f"  {name} {kind}: survey {mine[kind]}, checkdmarc {other.get(kind)}")
    print(f"SPF and DMARC verdicts: {2 * len(names) - len(differ)} of {2 * len(names)} the same")
    print("\n".join(differ[:50]))


if __name__ == "__main__":
    asyncio.run(main())
