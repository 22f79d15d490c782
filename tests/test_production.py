"""The production topology on one machine: `mailmove bootstrap`, then the worker and the
dashboard as processes of their own on PostgreSQL, configured by file and environment, a move
started through the dashboard's API, and both processes stopped by SIGTERM within the grace
period."""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx

from mailmove.base.model import MoveState
from mailmove.dashboard.auth import issue_token
from mailmove.sandbox.bind import free_port
from tests.support.dashboard import until_healthy, until_state
from tests.support.moves import terminate_running
from tests.support.paths import ROOT
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

DOMAIN = "chem.sandbox.test"
GRACE = 30  # the units' TimeoutStopSec and the pods' terminationGracePeriodSeconds


async def process(config, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailmove.cli", *args, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "MAILMOVE_CONFIG": str(config), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_bootstrap_then_worker_and_dashboard_processes_on_postgresql(dev_env, sandbox_factory, postgres_url):
    world = sandbox_factory(confirm_after=1)
    settings = settings_for(world, dev_env, portal_mode="http", database_url=postgres_url)
    config = world.root / "mailmove.toml"
    code, out, err = await mailmove(config, "bootstrap")
    assert code == 0 and "schema up to date" in out, err
    code, out, err = await mailmove(config, "bootstrap")  # idempotent
    assert code == 0 and "search attributes already registered" in out, err

    listen = f"127.0.0.1:{free_port()}"
    env = {"MAILMOVE_DASHBOARD_LISTEN": listen}  # the environment over the file
    worker = await process(config, "worker", env=env)
    dashboard = await process(config, "dashboard", env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=5) as c:
            await until_healthy(c, timeout=60, what="the dashboard's health")
            c.headers["Authorization"] = f"Bearer {issue_token(settings, 'ops', 'operator')}"
            r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": f"mail.{DOMAIN}"})
            assert r.status_code == 201, r.text
            await until_state(c, DOMAIN, "done", timeout=120, what="the move done by the worker process")
            # `done` is the status; the workflow closes after it (its guard's schedule, its mail):
            # stopped before that, the move would stay open on the shared dev server, and every
            # later test of the same domain would find it "already moving"
            handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, r.json()["id"])
            assert (await asyncio.wait_for(handle.result(), 60)).state == MoveState.DONE
    finally:
        for child in (worker, dashboard):
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")
    for child in (worker, dashboard):
        _, err = await asyncio.wait_for(child.communicate(), GRACE)
        assert child.returncode == 0, err.decode()[-2000:]
