"""Chaos benchmark (issue 16). Prints its figures; nothing leaves loopback.

Two waves of domain moves in one sandbox (one BIND zone each, TTL 3 s, the stand-in portal
confirming each registration after 1 s) on a dev server with its state in a SQLite file, with
`--workers` worker processes (`python -m mailmove.worker`: the worker without the CLI's
imports, 0.6 s less CPU a start): first calm, then with a worker killed (SIGKILL) every 3
to 8 seconds and a new one started at once, and the dev server killed and started again on its
file `--server-restarts` times, spread over the wave.

Verified from the peers' own records, not mailmove's: every zone serves exactly the gateway
hosts and its SOA serial rose by exactly two (two MX changes, no more), and the portal
stand-in holds exactly one request per domain. Reported: moves done, duplicate requests, zones
wrong; the time from a kill to the start of the lost attempt's retry (p50/p95/max; target p95
under 15 s), taken from the histories: each activity attempt that follows a timeout or a
hand-back, against the last kill before it; the chaos wave's wall time over the calm wave's
(target under 1.5x); and, from the calm wave, how long each kind of activity takes.

Run: .venv/bin/python bench/chaos.py [--moves 200] [--concurrency 50] [--server-restarts 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities.heartbeat import WORKER_SHUTDOWN  # noqa: E402
from mailmove.base.config import Settings, load_settings  # noqa: E402
from mailmove.base.model import MxRecord, mx_key  # noqa: E402
from mailmove.base.payload_codec import write_key_file  # noqa: E402
from mailmove.base.temporal import payload_keys  # noqa: E402
from mailmove.sandbox.world import GATEWAY_MX, Sandbox, SandboxOptions  # noqa: E402
from mailmove.service.embedded import DevServer  # noqa: E402
from mailmove.service.waves import prepare_wave, start_wave  # noqa: E402
from mailmove.store.db import upgrade  # noqa: E402
from tests.support.dns import serial_of, served_mx  # noqa: E402

TIMING = {"probe_interval": 1, "convergence_poll": 0.25, "convergence_pause": 1, "reminder_interval": 86400}
FINAL = mx_key([MxRecord(10, h) for h in GATEWAY_MX])
KILL_EVERY = (3.0, 8.0)


@dataclass
class Workers:
    """`count` worker processes at once (k8s/worker.yaml runs 2); a dead one (killed, or exited
    while the dev server was away) is replaced at once. With `kill`, one of them, chosen at
    random, is killed every 3 to 8 s."""

    config: Path
    count: int = 1
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)

    async def spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailmove.worker",
            "--config",
            str(self.config),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.config.parent / "workers.log", "ab"),
        )

    async def start(self) -> None:
        self.processes = [await self.spawn() for _ in range(self.count)]

    async def keep_alive(self, done: asyncio.Event, kill: bool) -> None:
        """Until `done`: replace a worker that exited; with `kill`, SIGKILL one every 3 to 8 s."""
        due = time.monotonic() + random.uniform(*KILL_EVERY)
        while not done.is_set():
            await asyncio.sleep(0.2)
            if kill and time.monotonic() >= due:
                victim = random.choice(self.processes)
                if victim.returncode is None:
                    victim.kill()
                    await victim.wait()
                    self.kills.append(time.time())
                due = time.monotonic() + random.uniform(*KILL_EVERY)
            for i, process in enumerate(self.processes):
                if process.returncode is not None:
                    self.processes[i] = await self.spawn()

    async def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            await asyncio.wait_for(process.wait(), 60)


@dataclass
class Server:
    """The dev server on its SQLite file, killed and started again on demand."""

    settings: Settings
    dev: DevServer | None = None
    client: Client | None = None
    restarts: list[float] = field(default_factory=list)

    async def start(self) -> None:
        self.dev = DevServer(self.settings)
        self.client = await self.dev.start(payload_keys(self.settings))

    async def restart_every(self, seconds: float, times: int) -> None:
        for _ in range(times):
            await asyncio.sleep(seconds)
            self.dev.process.kill()
            self.dev.process.wait()
            self.restarts.append(time.time())
            await self.start()


async def until_done(server: Server, workflow_id: str) -> dict:
    """The wave's result, asked again across dev server restarts."""
    while True:
        try:
            return await server.client.get_workflow_handle(workflow_id).result()
        except RPCError:
            await asyncio.sleep(1)


async def history(server: Server, workflow_id: str) -> list:
    while True:
        try:
            return [e async for e in server.client.get_workflow_handle(workflow_id).fetch_history_events()]
        except RPCError:
            await asyncio.sleep(1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def lost_and_retried(events: list, kills: list[float]) -> list[float]:
    """Seconds from a kill to the retry of an attempt lost to it: an attempt n that follows a
    timeout or a hand-back (`WorkerShutdown`). History keeps only the last attempt's start, so
    attempt n-1 is taken as lost to the (n-1)th kill after the activity was scheduled: each
    lost attempt took a kill of its own, so the real kill came no earlier, and the figure errs
    long, never short."""
    delays = []
    scheduled = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            failure = started.last_failure
            lost = failure.HasField("timeout_failure_info") or failure.application_failure_info.type == WORKER_SHUTDOWN
            if started.attempt < 2 or not lost:
                continue
            at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
            after = [k for k in kills if scheduled[started.scheduled_event_id] < k < at]
            if len(after) >= started.attempt - 1:
                delays.append(at - after[started.attempt - 2])
    return delays


def durations(events: list) -> dict[str, list[float]]:
    """Seconds from each activity's (last) start to its completion, by activity type."""
    kind, started, found = {}, {}, defaultdict(list)
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kind[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.activity_task_started_event_attributes.scheduled_event_id] = event.event_time.ToDatetime()
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            found[kind[sid]].append((event.event_time.ToDatetime() - started[sid]).total_seconds())
    return found


async def run_wave(
    server: Server, settings: Settings, workers: Workers, root: Path, domains: list[str], args, chaos: bool
) -> dict:
    csv = root / f"{'chaos' if chaos else 'calm'}.csv"
    csv.write_text("domain,legacy_mx\n" + "".join(f"{d},mail.{d}\n" for d in domains))
    wave = await prepare_wave(settings, csv, args.concurrency, "1000/s", name=csv.stem)
    await workers.start()
    await asyncio.sleep(3)
    done = asyncio.Event()
    began = time.monotonic()
    keeper = asyncio.create_task(workers.keep_alive(done, kill=chaos))
    restarts = None
    if chaos:
        spacing = args.calm_wall / (args.server_restarts + 1)
        restarts = asyncio.create_task(server.restart_every(spacing, args.server_restarts))
    counts = await until_done(server, await start_wave(server.client, settings, wave))
    wall = time.monotonic() - began
    done.set()
    await keeper
    if restarts is not None:
        await restarts  # every restart happens, even after a wave that ended early
    await workers.stop()
    events = await asyncio.gather(*(history(server, row.workflow_id) for row in wave.rows))
    return {"counts": counts, "wall": wall, "events": events}


def verify(world: Sandbox, domains: list[str], serials: dict[str, int]) -> tuple[int, int, int]:
    """(zones wrong, duplicate requests, domains without a request), from BIND and the portal."""
    port = world.dns.primary.port
    wrong = sum(served_mx(port, d) != FINAL or serial_of(port, d) != serials[d] + 2 for d in domains)
    filed = Counter(f.filing.subject for f in world.registry.requests.values() if f.filing.kind == "domain")
    duplicates = sum(filed[d] - 1 for d in domains if filed[d] > 1)
    missing = sum(filed[d] == 0 for d in domains)
    return wrong, duplicates, missing


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moves", type=int, default=200, help="moves in each wave")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--server-restarts", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes at once, in both waves (deploy/: 2)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailmove-bench-chaos-"))
    calm_domains = [f"d{i:03d}.calm.test" for i in range(args.moves)]
    chaos_domains = [f"d{i:03d}.chaos.test" for i in range(args.moves)]
    world = Sandbox(SandboxOptions(domains=(*calm_domains, *chaos_domains), ttl=3, confirm_after=1, root=root)).start()
    key = root / "payload-key"
    write_key_file(key)
    config = world.write_config(portal_mode="http", timing=TIMING, payload_keys=[str(key)], task_queue="chaos")
    listen = load_settings(config).temporal.embedded_listen
    config.write_text(config.read_text().replace('address = ""', f'address = "{listen}"', 1))
    settings = load_settings(config)
    upgrade(settings.database.url)
    server = Server(settings)
    await server.start()
    workers = Workers(config, args.workers)
    serials = {d: serial_of(world.dns.primary.port, d) for d in calm_domains + chaos_domains}
    print(
        f"two waves of {args.moves} domain moves, at most {args.concurrency} at once, {args.workers} worker "
        "process(es); dev server on a SQLite file"
    )
    try:
        calm = await run_wave(server, settings, workers, root, calm_domains, args, chaos=False)
        args.calm_wall = calm["wall"]
        chaos = await run_wave(server, settings, workers, root, chaos_domains, args, chaos=True)
        for name, wave, domains in (("calm", calm, calm_domains), ("chaos", chaos, chaos_domains)):
            wrong, duplicates, missing = verify(world, domains, serials)
            print(
                f"  {name}: {wave['wall']:.1f} s; moves done {wave['counts'].get('done', 0)}/{len(domains)} "
                f"{dict(wave['counts'])}; duplicate requests {duplicates}; domains without a request {missing}; "
                f"zones wrong {wrong}"
            )
        print(
            f"  chaos: {len(workers.kills)} worker kills, {len(server.restarts)} dev server restarts; "
            f"wall time chaos/calm {chaos['wall'] / calm['wall']:.2f}x (target < 1.5x)"
        )
        delays = [d for events in chaos["events"] for d in lost_and_retried(events, workers.kills)]
        if delays:
            p95 = percentile(delays, 0.95)
            print(
                f"  kill -> retry of the lost attempt ({len(delays)} attempts): p50 {statistics.median(delays):.1f} s, "
                f"p95 {p95:.1f} s, max {max(delays):.1f} s (target p95 < 15 s: {'met' if p95 < 15 else 'NOT met'})"
            )
        taken: dict[str, list[float]] = defaultdict(list)
        for events in calm["events"]:
            for kind, seconds in durations(events).items():
                taken[kind] += seconds
        print("  activity durations, calm wave (start to completion, seconds): p50 / p99 / max")
        for kind, seconds in sorted(taken.items()):
            print(
                f"    {kind:20} {statistics.median(seconds):7.3f} {percentile(seconds, 0.99):7.3f} "
                f"{max(seconds):7.3f}  ({len(seconds)})"
            )
    finally:
        server.dev.stop()
        world.stop()


if __name__ == "__main__":
    asyncio.run(main())
