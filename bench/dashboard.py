"""Dashboard benchmark (issue 4). Prints its figures; nothing leaves 127.0.0.1.

With 1,000 and then 10,000 migrations in the store (each with 12 audit events, SQLite, as
`mailmove up` uses by default), the time to serve the first page of the list, the list
filtered by state, a search, and the detail page of a real move waiting on the dev server.
The dashboard runs as in `mailmove up` (uvicorn, in the worker's event loop); the client is a
process of its own on the same machine (httpx, one keep-alive connection, token auth).
Target: median under 50 ms each; and how the time grows from 1,000 to 10,000.

Run: .venv/bin/python bench/dashboard.py [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailmove.base import search  # noqa: E402
from mailmove.base.config import load_settings  # noqa: E402
from mailmove.base.inputs import DomainMoveRequest  # noqa: E402
from mailmove.base.vocabulary import DOMAIN_STAGES  # noqa: E402
from mailmove.dashboard.auth import issue_token  # noqa: E402
from mailmove.dashboard.serve import serving  # noqa: E402
from mailmove.sandbox.world import Sandbox, SandboxOptions  # noqa: E402
from mailmove.service import control  # noqa: E402
from mailmove.service.embedded import temporal_binary  # noqa: E402
from mailmove.store.db import engine, upgrade  # noqa: E402
from mailmove.store.models import AuditEvent, Migration  # noqa: E402
from mailmove.worker import build_worker  # noqa: E402

DOMAIN = "chem.sandbox.test"
STATES = ["waiting", "running", "needs_attention", "done", "cancelled"]


def populate(url: str, start: int, count: int) -> None:
    """`count` synthetic migrations (ids from `start`), spread over a year, 12 events each."""
    now = datetime.now(UTC)
    moves, events = [], []
    for i in range(start, start + count):
        at = now - timedelta(minutes=53 * i)
        wid = f"domain-move:dept{i}.bench.example"
        state = STATES[i % len(STATES)]
        moves.append(dict(workflow_id=wid, kind="domain" if i % 4 else "server", subject=wid.split(":")[1],
                          stage=DOMAIN_STAGES[i % len(DOMAIN_STAGES)], state=state,
                          attention=state == "needs_attention", created_at=at, updated_at=at))  # fmt: skip
        for seq in range(1, 13):
            events.append(dict(id=uuid.uuid4().hex, workflow_id=wid, seq=seq, at=at + timedelta(seconds=seq),
                               actor="mailmove", action="stage done", stage=DOMAIN_STAGES[seq % 7],
                               detail="every authoritative server serves 10 a2681.mx.srv.dfn.de.", result="done"))  # fmt: skip
    with engine(url).begin() as connection:
        connection.execute(insert(Migration), moves)
        for chunk in range(0, len(events), 5000):
            connection.execute(insert(AuditEvent), events[chunk : chunk + 5000])


def client_run(base: str, token: str, paths: list[str], requests: int) -> dict[str, list[float]]:
    """The client process: each path `requests` times after 3 warm-ups; milliseconds."""
    timings = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for path in paths:
            for _ in range(3):
                client.get(path).raise_for_status()
            samples = []
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
            timings[path] = samples
    return timings


async def measure(base: str, token: str, paths: list[str], requests: int) -> dict[str, list[float]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", base, token, json.dumps(paths), str(requests),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return json.loads(out)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailmove-bench-dashboard-"))
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), search_attributes=list(search.ALL), dev_server_log_level="error"
    ) as env:
        with Sandbox(SandboxOptions(root=root, confirm_after=10**9)) as world:
            address = env.client.service_client.config.target_host
            settings = load_settings(world.write_config(temporal_address=address, portal_mode="manual"))
            upgrade(settings.database.url)
            async with build_worker(env.client, settings), serving(settings, env.client):
                move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}"))
                wid = await control.start_domain_move(env.client, settings, move)
                while (await control.show(env.client, settings, wid)).status.stage != "request_domain":
                    await asyncio.sleep(0.2)
                token = issue_token(settings, "bench", "viewer")
                base = f"http://{settings.dashboard.listen}"
                paths = {
                    "list, first page": "/",
                    "list, state=waiting": "/?state=waiting",
                    "list, search": "/?q=dept77",
                    "detail (a live move)": f"/migrations/{wid}",
                }
                results = {}
                populate(settings.database.url, 0, 1000)
                results[1000] = await measure(base, token, list(paths.values()), args.requests)
                populate(settings.database.url, 1000, 9000)
                results[10000] = await measure(base, token, list(paths.values()), args.requests)
    print(f"dashboard, {args.requests} requests per figure after 3 warm-ups, SQLite, medians (p95):")
    print(f"{'page':26} {'1,000 moves':>18} {'10,000 moves':>18} {'growth':>8}")
    for name, path in paths.items():
        small, large = results[1000][path], results[10000][path]
        row = [f"{statistics.median(s):7.1f} ms ({_p95(s):5.1f})" for s in (small, large)]
        print(f"{name:26} {row[0]:>18} {row[1]:>18} {statistics.median(large) / statistics.median(small):7.2f}x")


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        print(json.dumps(client_run(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]))))
    else:
        asyncio.run(main())
