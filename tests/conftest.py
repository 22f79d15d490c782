"""Real servers for the tests: Temporal (time-skipping and dev), BIND, the portal and SMTP
stand-ins, SQLite and PostgreSQL, Chromium. Every server binds 127.0.0.1 on a port chosen at run
time. Fixtures and hooks only: the helpers the tests share are in tests/support/.

A test is marked by what it needs (docs/testing.md): the fixtures it uses mark it here, in
`pytest_collection_modifyitems`; a module that starts such a server by itself says so with
`pytestmark`."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import async_playwright
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from mailmove.base import search
from mailmove.base.config import Settings
from mailmove.base.temporal import register_search_attributes
from mailmove.sandbox.world import Sandbox, SandboxOptions
from mailmove.service.embedded import temporal_binary
from mailmove.store.db import engine
from mailmove.worker import build_agent, build_worker
from tests.support.browser import CHROMIUM, FLAGS
from tests.support.fake_activities import without_schedules
from tests.support.moves import terminate_all_running
from tests.support.paths import BIN
from tests.support.payloads import encrypting
from tests.support.postfix import LocalPostfix, start_postfix
from tests.support.postgres_cluster import throwaway_cluster
from tests.support.settings import settings_for

# a PostgreSQL server to use (its admin URL); unset, the tests start a throwaway cluster
POSTGRES_ENV = "MAILMOVE_TEST_POSTGRES"

# what a fixture (or any fixture that depends on it) makes its test need; `slow` keeps it out of
# the quick run, `pytest -m "not slow"`, which has the time-skipping server and nothing else
NEEDS = {
    "time_env": ("temporal",),
    "dev_env": ("temporal", "slow"),
    "sandbox_factory": ("bind", "slow"),
    "postgres_admin": ("postgres", "slow"),
    "netns": ("root", "slow"),
    "local_postfix": ("root", "slow"),
    "browser": ("chromium", "slow"),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for mark in sorted({m for fixture, marks in NEEDS.items() if fixture in used for m in marks}):
            item.add_marker(mark)


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of the test's own (it starts in about 0.1 s). Shared, one
    test's stopped clock stopped every later test's: the server stops skipping time for good
    when a workflow task is refused (an activity cancelled as it is handed out, ACTIVITY_UNKNOWN),
    and every later sleep then failed with "Timeout expired"."""
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


@pytest.fixture(scope="module", autouse=True)
async def dev_server_left_clean(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a module whose tests share the dev server, whatever still runs there is terminated.
    A move that a failed test left running made every later module's move of the same domain or
    server "already moving" (11 and 8 failures in two CI runs from one cause each); this bounds
    such a cascade to its own module. It is torn down after the module's own fixtures, so their
    workers have stopped by then."""
    if not any(i.module is request.module and "dev_env" in i.fixturenames for i in request.session.items):
        yield
        return
    env: WorkflowEnvironment = request.getfixturevalue("dev_env")
    yield
    left = await terminate_all_running(env.client)
    if left:
        print(f"{request.module.__name__} left running, now terminated: {', '.join(left)}", file=sys.stderr)


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
async def worker_for(request: pytest.FixtureRequest):
    """Run an in-process worker (the real activities) for a settings object until the test ends.
    On the time-skipping server, which has no Schedules, the guard's `ensure_schedule` is a fake of
    the same name (tests/support/fake_activities.py, `NoSchedules`)."""
    running = []

    def time_skipping(client: Client) -> bool:
        return "time_env" in request.fixturenames and client is request.getfixturevalue("time_env").client

    async def start(client: Client, settings: Settings):
        worker = build_worker(client, settings, hosted=without_schedules(settings) if time_skipping(client) else None)
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


@pytest.fixture
def local_postfix() -> Iterator[Callable[..., LocalPostfix]]:
    """Real Postfix instances of the test's own (tests/support/postfix.py), stopped and removed after."""
    started: list[LocalPostfix] = []

    def start(main_cf: str = "", start: bool = True, hosts: dict[str, str] | None = None) -> LocalPostfix:
        started.append(start_postfix(main_cf, start, hosts))
        return started[-1]

    yield start
    for local in started:
        local.stop()


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


@pytest.fixture
async def cli_world(dev_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(world, dev_env, portal_mode="manual")
    config = world.root / "mailmove.toml"
    await worker_for(dev_env.client, settings)
    return world, settings, config


@pytest.fixture
async def browser():
    """Debian's Chromium, headless, through Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/setup installs it)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()
