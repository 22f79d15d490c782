"""Propagation benchmark (issue 2). Prints its figures; nothing leaves 127.0.0.1.

1. Verdict overhead: over repeated sandbox moves (real BIND primary + 2 secondaries, caching
   resolver, dev server, one worker), the time from the moment the last authoritative server
   starts serving the final MX set (seen by an independent 10 ms poller) to the workflow's
   `done` verdict, minus the old TTL. Target: median under 1 s.
2. One propagation round over 3 authoritative servers and 8 resolvers, each behind a UDP
   relay of this benchmark that delays every answer by its own 20-55 ms (this kernel has no
   `tc netem`), with mailmove's concurrent round against the same queries one after another.
   Targets: at least 5x faster, and within 1.5x of the slowest single server's answer.

Run: .venv/bin/python bench/propagation.py [--runs 7] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import dns.asyncquery
import dns.message
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.dns import DnsActivities  # noqa: E402
from mailmove.base import search  # noqa: E402
from mailmove.base.config import HostPort, load_settings  # noqa: E402
from mailmove.base.inputs import DomainMoveRequest  # noqa: E402
from mailmove.base.model import ConvergenceQuery, MxRecord, ResolverQuery, mx_key  # noqa: E402
from mailmove.sandbox.bind import free_port  # noqa: E402
from mailmove.sandbox.world import GATEWAY_MX, Sandbox, SandboxOptions  # noqa: E402
from mailmove.service import control  # noqa: E402
from mailmove.service.embedded import temporal_binary  # noqa: E402
from mailmove.store.db import upgrade  # noqa: E402
from mailmove.worker import build_worker  # noqa: E402
from workflows.domain_move import DomainMoveWorkflow  # noqa: E402

DOMAIN = "chem.sandbox.test"
FINAL = mx_key([MxRecord(10, h) for h in GATEWAY_MX])
TTL = 3


class DelayRelay(asyncio.DatagramProtocol):
    """Forwards UDP queries to `target` and hands each answer back `delay` seconds later."""

    def __init__(self, target: HostPort, delay: float):
        self.target, self.delay = target, delay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, client) -> None:
        asyncio.get_running_loop().create_task(self.forward(data, client))

    async def forward(self, data: bytes, client) -> None:
        query = dns.message.from_wire(data)
        answer = await dns.asyncquery.udp(query, self.target.host, port=self.target.port, timeout=5)
        await asyncio.sleep(self.delay)
        self.transport.sendto(answer.to_wire(), client)


async def relay(target: HostPort, delay: float) -> tuple[HostPort, asyncio.DatagramTransport]:
    port = free_port()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DelayRelay(target, delay), local_addr=("127.0.0.1", port)
    )
    return HostPort("127.0.0.1", port), transport


async def first_time_serving(port: int, expected, stop: asyncio.Event) -> float | None:
    """Monotonic time at which the server on `port` first serves `expected` (10 ms polling)."""
    while not stop.is_set():
        reply = await dns.asyncquery.udp(dns.message.make_query(DOMAIN, "MX"), "127.0.0.1", port=port, timeout=2)
        now = time.monotonic()
        served = mx_key(
            [MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True)) for s in reply.answer for r in s]
        )
        if served == expected:
            return now
        await asyncio.sleep(0.01)
    return None


async def verdict_overhead(env: WorkflowEnvironment, runs: int) -> list[float]:
    overheads = []
    for i in range(runs):
        with Sandbox(SandboxOptions(ttl=TTL, confirm_after=1, secondaries=2, notify=1)) as world:
            config = world.write_config(
                temporal_address=env.client.service_client.config.target_host,
                task_queue=f"bench-{uuid.uuid4()}",
                portal_mode="http",
                timing={"probe_interval": 0.5, "convergence_poll": 0.1},
            )
            settings = load_settings(config)
            upgrade(settings.database.url)
            stop = asyncio.Event()
            watchers = [
                asyncio.create_task(first_time_serving(p, FINAL, stop))
                for p in [world.dns.primary.port] + [s.port for s in world.dns.secondaries]
            ]
            async with build_worker(env.client, settings):
                move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}"))
                wid = await control.start_domain_move(env.client, settings, move)
                await env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid).result()
                verdict = time.monotonic()
            stop.set()
            agreed = max(await asyncio.gather(*watchers))
            overheads.append(verdict - agreed - TTL)
            print(
                f"  run {i + 1}: last server agreed -> done = {verdict - agreed:.3f} s, minus TTL {TTL} s = "
                f"{overheads[-1]:.3f} s",
                flush=True,
            )
    return overheads


async def round_timing(rounds: int) -> dict[str, list[float]]:
    with Sandbox(SandboxOptions(ttl=300, secondaries=2)) as world:
        settings = load_settings(world.write_config())
        authoritative = [world.dns.primary] + world.dns.secondaries
        transports = []
        relayed_auth, relayed_res = [], []
        for i, server in enumerate(authoritative):  # 20, 35, 50 ms
            address, transport = await relay(HostPort("127.0.0.1", server.port), 0.020 + 0.015 * i)
            relayed_auth.append(address)
            transports.append(transport)
        for i in range(8):  # 20 ... 55 ms
            address, transport = await relay(HostPort("127.0.0.1", world.dns.resolver.port), 0.020 + 0.005 * i)
            relayed_res.append(address)
            transports.append(transport)
        settings = replace(settings, dns=replace(settings.dns, resolvers=tuple(relayed_res)))
        dns_acts = DnsActivities(settings)
        env = ActivityEnvironment()
        original = mx_key([MxRecord(10, f"mail.{DOMAIN}")])
        auth_query = ConvergenceQuery(DOMAIN, DOMAIN, [str(a) for a in relayed_auth], list(original), 0, 0.1)
        res_query = ResolverQuery(DOMAIN, list(original))

        async def concurrent_round():
            report, views = await asyncio.gather(
                env.run(dns_acts.poll_authoritative, auth_query), env.run(dns_acts.observe_resolvers, res_query)
            )
            assert report.converged and all(v.serves_target for v in views)

        # the round's queries: MX and SOA of every authoritative server, MX of every resolver
        queries = [(dns_acts.read_mx, a, DOMAIN) for a in relayed_auth] + [
            (dns_acts.read_soa, a, DOMAIN) for a in relayed_auth
        ]
        queries += [(lambda a, d: dns_acts.ask(a, d, "MX", recursive=True), r, DOMAIN) for r in relayed_res]

        async def single_server(address: HostPort) -> float:
            """One server's answer alone, asked as the round asks it."""
            started = time.perf_counter()
            if address in relayed_auth:
                await asyncio.gather(dns_acts.read_mx(address, DOMAIN), dns_acts.read_soa(address, DOMAIN))
            else:
                await dns_acts.ask(address, DOMAIN, "MX", recursive=True)
            return time.perf_counter() - started

        figures: dict[str, list[float]] = {"concurrent": [], "sequential": [], "slowest_single": []}
        await concurrent_round()  # warm the resolver's cache
        for _ in range(rounds):
            t = time.perf_counter()
            await concurrent_round()
            figures["concurrent"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for query, address, name in queries:
                await query(address, name)
            figures["sequential"].append(time.perf_counter() - t)
            figures["slowest_single"].append(max([await single_server(a) for a in relayed_auth + relayed_res]))
        for transport in transports:
            transport.close()
        return figures


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    print(f"1. verdict overhead over {args.runs} sandbox moves (TTL {TTL} s, 3 authoritative servers)")
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), search_attributes=list(search.ALL), dev_server_log_level="error"
    ) as env:
        overheads = await verdict_overhead(env, args.runs)
    median = statistics.median(overheads)
    print(
        f"   median {median:.3f} s (min {min(overheads):.3f}, max {max(overheads):.3f}); target < 1 s: "
        f"{'met' if median < 1 else 'NOT met'}"
    )

    print(f"\n2. one propagation round, 3 authoritative + 8 resolvers behind 20-55 ms relays, {args.rounds} rounds")
    figures = await round_timing(args.rounds)
    med = {k: statistics.median(v) for k, v in figures.items()}
    speedup = med["sequential"] / med["concurrent"]
    vs_slowest = med["concurrent"] / med["slowest_single"]
    print(f"   concurrent round   median {med['concurrent'] * 1000:7.1f} ms")
    print(f"   one after another  median {med['sequential'] * 1000:7.1f} ms")
    print(f"   slowest single     median {med['slowest_single'] * 1000:7.1f} ms")
    print(
        f"   speed-up {speedup:.1f}x (target >= 5x: {'met' if speedup >= 5 else 'NOT met'}); "
        f"concurrent / slowest single {vs_slowest:.2f} (target <= 1.5: {'met' if vs_slowest <= 1.5 else 'NOT met'})"
    )


if __name__ == "__main__":
    asyncio.run(main())
