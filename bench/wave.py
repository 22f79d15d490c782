"""Wave benchmark (issue 7). Prints its figures; nothing leaves loopback.

A wave of domain moves in the sandbox (one BIND zone each, TTL 3 s, the stand-in portal
confirming each registration after 1 s) on the Temporal dev server with one worker process.
Reported: the wave's wall time, the worker's peak resident memory (VmHWM), and the
orchestration overhead: that wall time over the wall time of a wave of no-op workflows with
the same number of activities and timers (each no-op move replays the activities and timers,
of the same lengths, of one real move's history) on the same server. The real wave runs as
mailmove does, with its payloads encrypted; the no-op wave is Temporal alone, in clear, so
the codec's cost counts against mailmove. Targets: overhead under 2x, worker under 400 MB.

Run: .venv/bin/python bench/wave.py [--moves 500] [--concurrency 100] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from noop_wave import NoopWave, NoopWaveInput  # noqa: E402

from mailmove.base import search  # noqa: E402
from mailmove.base.config import load_settings  # noqa: E402
from mailmove.base.payload_codec import write_key_file  # noqa: E402
from mailmove.base.temporal import connect  # noqa: E402
from mailmove.sandbox.world import Sandbox, SandboxOptions  # noqa: E402
from mailmove.service.embedded import temporal_binary  # noqa: E402
from mailmove.service.waves import prepare_wave, start_wave  # noqa: E402
from mailmove.store.db import upgrade  # noqa: E402

T = TypeVar("T")
TIMING = {"probe_interval": 1, "convergence_poll": 0.25, "convergence_pause": 1, "reminder_interval": 86400}


async def worker_process(*command: str) -> asyncio.subprocess.Process:
    """A worker process, polling after a few seconds (or the reason it did not start)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(3)
    if process.returncode is not None:
        raise RuntimeError(f"{command[-2:]} exited: {(await process.stderr.read()).decode()[-3000:]}")
    return process


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(address: str) -> int:
    """The dev server's process, found by the port on its command line."""
    port = address.rpartition(":")[2]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in args and port.encode() in args:
            return int(cmdline.parent.name)
    raise RuntimeError(f"no dev server on port {port}")


async def measured(work: Awaitable[T], *pids: int) -> tuple[T, float, list[float]]:
    """`work`'s result, its wall time and the CPU seconds each of `pids` spent meanwhile."""
    began, before = time.monotonic(), [cpu_seconds(pid) for pid in pids]
    result = await work
    return result, time.monotonic() - began, [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]


def peak_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    if process.returncode:
        raise RuntimeError(f"worker exited {process.returncode}: {err.decode()[-2000:]}")


async def profile_of(client, workflow_id: str) -> list[float]:
    """A real move's activities (-1) and timers (their seconds), in the order it ran them."""
    steps = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            steps.append(-1.0)
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            steps.append(event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds())
    return steps


async def one_run(env: WorkflowEnvironment, moves: int, concurrency: int) -> dict:
    address = env.client.service_client.config.target_host
    server = server_pid(address)
    root = Path(tempfile.mkdtemp(prefix="mailmove-bench-wave-"))
    domains = tuple(f"d{i:03d}.wave.test" for i in range(moves))
    started = time.monotonic()
    world = Sandbox(SandboxOptions(domains=domains, ttl=3, confirm_after=1, root=root / "world")).start()
    setup = time.monotonic() - started
    try:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        key = root / "payload-key"
        write_key_file(key)
        config = world.write_config(
            temporal_address=address, task_queue=queue, portal_mode="http", timing=TIMING, payload_keys=[str(key)]
        )
        settings = load_settings(config)
        client = await connect(settings)  # as the CLI and the dashboard do: the wave's input encrypted
        upgrade(settings.database.url)
        csv = root / "wave.csv"
        csv.write_text("domain,legacy_mx\n" + "".join(f"{d},mail.{d}\n" for d in domains))
        wave = await prepare_wave(settings, csv, concurrency, "1000/s", name=f"bench-{queue}")

        worker = await worker_process(sys.executable, "-m", "mailmove.cli", "--config", str(config), "worker")

        async def real_wave() -> dict[str, int]:
            return await client.get_workflow_handle(await start_wave(client, settings, wave)).result()

        counts, real, real_cpu = await measured(real_wave(), worker.pid, server)
        real_peak = peak_mb(worker.pid)
        await stop(worker)
        if counts != {"done": moves}:
            raise RuntimeError(f"the wave ended with {counts}")

        # each no-op move replays its own real move: moves differ in how often they polled
        profiles = await asyncio.gather(*(profile_of(env.client, row.workflow_id) for row in wave.rows))
        noop_queue = f"{queue}-noop"
        noop_worker = await worker_process(
            sys.executable, str(ROOT / "bench" / "noop_wave.py"), str(config), noop_queue
        )
        await asyncio.sleep(3)
        noop_wave = env.client.execute_workflow(
            NoopWave.run,
            NoopWaveInput(concurrency, 60 / wave.rate, profiles),
            id=f"noop-{queue}",
            task_queue=noop_queue,
        )
        _, noop, noop_cpu = await measured(noop_wave, noop_worker.pid, server)
        noop_peak = peak_mb(noop_worker.pid)
        await stop(noop_worker)
    finally:
        world.stop()
    return {
        "setup": setup,
        "real": real,
        "noop": noop,
        "ratio": real / noop,
        "peak": real_peak,
        "noop_peak": noop_peak,
        "cpu": real_cpu,
        "noop_cpu": noop_cpu,
        "activities": [sum(1 for s in p if s < 0) for p in profiles],
        "timers": [sum(1 for s in p if s >= 0) for p in profiles],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moves", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"a wave of {args.moves} domain moves, at most {args.concurrency} at once, dev server + one worker process")
    results = []
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=list(search.ALL),
        dev_server_log_level="error",
    ) as env:
        for run in range(args.runs):
            r = await one_run(env, args.moves, args.concurrency)
            results.append(r)
            print(
                f"  run {run + 1}: wave {r['real']:.1f} s, no-op wave {r['noop']:.1f} s, overhead {r['ratio']:.2f}x; "
                f"worker peak {r['peak']:.0f} MB (no-op worker {r['noop_peak']:.0f} MB); sandbox up in {r['setup']:.1f} s"
            )
            print(
                f"         CPU seconds, worker + dev server: wave {r['cpu'][0]:.0f} + {r['cpu'][1]:.0f}, "
                f"no-op wave {r['noop_cpu'][0]:.0f} + {r['noop_cpu'][1]:.0f}"
            )
    r = results[-1]
    print(
        f"  a move: {statistics.median(r['activities']):.0f} activities "
        f"({min(r['activities'])}–{max(r['activities'])}), {statistics.median(r['timers']):.0f} timers "
        f"({min(r['timers'])}–{max(r['timers'])}), each replayed by its no-op move"
    )
    ratio = statistics.median(x["ratio"] for x in results)
    peak = statistics.median(x["peak"] for x in results)
    wall = statistics.median(x["real"] for x in results)
    print(f"median of {len(results)} run(s): wave {wall:.1f} s ({args.moves / wall * 60:.0f} moves a minute)")
    print(f"  overhead {ratio:.2f}x (target < 2x: {'met' if ratio < 2 else 'NOT met'})")
    print(f"  worker peak {peak:.0f} MB (target < 400 MB: {'met' if peak < 400 else 'NOT met'})")


if __name__ == "__main__":
    asyncio.run(main())
