"""Real servers for the tests: Temporal (time-skipping and dev), BIND, the portal and SMTP
stand-ins, SQLite and PostgreSQL. Every server binds 127.0.0.1 on a port chosen at run time."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import dns.message
import dns.query
import psycopg
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from mailmove.config import Settings, load_settings
from mailmove.embedded import temporal_binary
from mailmove.payload_codec import Always, EncryptionCodec, data_converter, read_key_file, write_key_file
from mailmove.temporal import register_search_attributes
from sandbox.world import Sandbox, SandboxOptions
from store.db import engine, upgrade
from tests.postgres_cluster import throwaway_cluster
from worker import build_agent, build_worker
from workflows import search
from workflows.model import MoveStatus, MxRecord, mx_key

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
# a PostgreSQL server to use (its admin URL); unset, the tests start a throwaway cluster
POSTGRES_ENV = "MAILMOVE_TEST_POSTGRES"
# the payload key of the tests' Temporal clients and of every sandbox configuration they write
PAYLOAD_KEY = Path(tempfile.mkdtemp(prefix="mailmove-tests-")) / "payload-key"
write_key_file(PAYLOAD_KEY)


def encrypting() -> DataConverter:
    """What the tests' clients use: the payload codec of every mailmove process, decoding
    anything (a client acts on nothing); the strict workers are those built from a config."""
    return data_converter(EncryptionCodec([read_key_file(PAYLOAD_KEY)], Always()))


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    server = (
        str(BIN / "temporal-test-server")
        if (BIN / "temporal-test-server").exists()
        else shutil.which("temporal-test-server")
    )
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=server, data_converter=encrypting()
    ) as env:
        await register_search_attributes(env.client, "default")
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    # Every dev-server test shares this one: a failed start is printed and tried again (twice)
    # rather than failing all of them (seen once here, cause not found).
    for attempt in range(3):
        try:
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(),
                search_attributes=list(search.ALL),
                dev_server_log_level="error",
                data_converter=encrypting(),
            )
            break
        except Exception as exc:  # noqa: BLE001 - reported, then retried or raised
            print(f"dev server start {attempt + 1} failed: {exc!r}", file=sys.stderr)
            if attempt == 2:
                raise
    async with env:
        yield env


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Callable[..., Sandbox]:
    started: list[Sandbox] = []

    def make(**options) -> Sandbox:
        world = Sandbox(SandboxOptions(root=tmp_path / f"world{len(started)}", **options)).start()
        started.append(world)
        return world

    yield make
    for world in started:
        world.stop()


def settings_for(world: Sandbox, env: WorkflowEnvironment | None = None, **config) -> Settings:
    """The sandbox's config, pointed at `env`'s Temporal on a task queue of the test's own."""
    address = env.client.service_client.config.target_host if env else ""
    config.setdefault("task_queue", f"tq-{uuid.uuid4()}")
    if env:
        config.setdefault("payload_keys", [str(PAYLOAD_KEY)])
    settings = load_settings(world.write_config(temporal_address=address, **config))
    upgrade(settings.database.url)
    return settings


async def wait_for(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(interval)


async def status_of(handle: WorkflowHandle) -> MoveStatus:
    return await handle.query("status", result_type=MoveStatus)


async def until_stage(handle: WorkflowHandle, stage: str, state: str | None = None, timeout: float = 60) -> MoveStatus:
    seen = []

    async def check():
        status = await status_of(handle)
        current = next(s for s in status.stages if s.name == status.stage)
        seen[:] = [f"{status.stage}/{current.state.value} ({current.last_error or current.waiting_for})"]
        return status if status.stage == stage and (state is None or current.state.value == state) else None

    try:
        return await wait_for(check, timeout, what=f"stage {stage} {state or ''}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the move is at {seen}") from None


async def started_since(client: Client, workflow_id: str, since) -> bool:
    """Whether a run of `workflow_id` began at or after `since` (the dev server is shared, so an
    earlier test's run of the same id may exist)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return description.start_time >= since


async def terminate_running(client: Client, *workflow_ids: str) -> None:
    """Leave the shared dev server clean: a move left running would block the next test's."""
    for wid in workflow_ids:
        handle = client.get_workflow_handle(wid)
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")
        except RPCError:
            pass


async def until_quiet(handle: WorkflowHandle, timeout: float = 30) -> None:
    """Until none of the move's activities is running. Before a cancel on the time-skipping
    server: the Java test server answers a cancel that races an activity's completion with
    ACTIVITY_UNKNOWN and the workflow task never completes (seen here; the real server copes)."""

    async def quiet() -> bool:
        return not (await handle.describe()).raw_description.pending_activities

    await wait_for(quiet, timeout, what="no running activity")


async def reach(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    stage: str,
    state: str = "waiting",
    step: timedelta = timedelta(minutes=10),
    limit: int = 300,
) -> MoveStatus:
    """Skip time in steps (with a breath of real time for the stand-ins) until the move is at `stage`."""
    for _ in range(limit):
        status = await status_of(handle)
        current = next(s for s in status.stages if s.name == status.stage)
        if status.stage == stage and current.state.value == state:
            return status
        await env.sleep(step)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not reach {stage}/{state}; it is at {status.stage}/{current.state.value}")


async def skip_to_end(
    env: WorkflowEnvironment, handle: WorkflowHandle, step: timedelta = timedelta(hours=1), limit: int = 500
):
    """Skip time in steps until the workflow closes (the server's own auto-skip in `result()`
    did not advance timers here), then return its result."""
    for _ in range(limit):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return await handle.result()
        await env.sleep(step)
    raise AssertionError(f"{handle.id} still running after {limit} steps of {step}")


def served_mx(port: int, domain: str, recursive: bool = False) -> tuple[MxRecord, ...]:
    """The MX set a server on 127.0.0.1:port serves (an authoritative one unless `recursive`)."""
    query = dns.message.make_query(domain, "MX")
    if recursive:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=3)
    else:
        reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=3)
    return mx_key(
        [MxRecord(r.preference, r.exchange.to_text(omit_final_dot=True)) for rrset in reply.answer for r in rrset]
    )


def resolved_mx(port: int, domain: str) -> tuple[MxRecord, ...]:
    """What a caching resolver answers now."""
    return served_mx(port, domain, recursive=True)


def serial_of(port: int, zone: str) -> int:
    reply = dns.query.tcp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=port, timeout=3)
    return reply.answer[0][0].serial


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """`$MAILMOVE_TEST_POSTGRES` when set, else a throwaway cluster of the tests' own."""
    if os.environ.get(POSTGRES_ENV):
        yield os.environ[POSTGRES_ENV]
        return
    with throwaway_cluster() as admin:
        yield admin


@pytest.fixture
def postgres_url(postgres_admin: str) -> str:
    """A database of the test's own, dropped afterwards."""
    name = f"mailmove_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    engine(f"{base}/{name}").dispose()  # engines are cached per URL: close ours before the drop
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def worker_for():
    """Run an in-process worker (the real activities) for a settings object until the test ends."""
    running = []

    async def start(client: Client, settings: Settings):
        worker = build_worker(client, settings)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        return worker

    yield start
    for worker, task in running:
        await worker.shutdown()
        await task


@pytest.fixture
def netns() -> str:
    """A network namespace of the test's own: nftables there never touches the machine's ruleset."""
    name = f"mailmove-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def nft_in(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns, "nft"]


@pytest.fixture
async def agent_for():
    """Run an in-process host agent (the real firewall, Postfix and relay-test activities)."""
    running = []

    async def start(client: Client, settings: Settings, host: str):
        agent = build_agent(client, settings, host)
        running.append((agent, asyncio.create_task(agent.run())))
        return agent

    yield start
    for agent, task in running:
        await agent.shutdown()
        await task


async def mailmove(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailmove.cli",
        "--config",
        str(config),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli_world(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    config = world.root / "mailmove.toml"
    await worker_for(dev_env.client, settings)
    return world, settings, config
