"""A lost worker costs seconds, not minutes.

A real worker process (`worker.py`, or the host agent `worker.py --host`) is killed with SIGKILL
while each kind of activity is in flight: the DNS update, the convergence poll, the portal
filing, the RCPT probe, the checks, the host agent's relay test. Each is held in flight by a
real peer that is slow to answer (a silent DNS or SMTP port of the test's own, the portal or
relay stand-in holding its reply back). The time from the kill to the next attempt starting on
a new worker (the server's own start time of that attempt) must stay under `BOUND`, with the
defaults of `timing` (heartbeat timeout, retry policy). And `mailmove worker` stopped by
SIGTERM with a filing in flight hands it back at once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Replayer

from activities.heartbeat import WORKER_SHUTDOWN
from mailmove.base.config import load_settings
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import MoveState
from mailmove.sandbox.bind import free_port
from mailmove.sandbox.world import Sandbox
from mailmove.service import control
from mailmove.worker import WORKFLOWS
from tests.support.domain_move import DOMAIN
from tests.support.firewall import nft_in
from tests.support.moves import in_flight, started_at, terminate_running, until_stage
from tests.support.paths import ROOT
from tests.support.processes import kill, start_worker
from tests.support.server_move import NEW, request
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

# kill -> next attempt started on a new worker: heartbeat timeout (5 s) + first retry (1 s) +
# a new worker process starting (about 3 s here), with room for a loaded 2-core CI machine
BOUND = 15.0


def update_server(config: str, port: int) -> str:
    return re.sub(r'update_server = "[^"]*"', f'update_server = "127.0.0.1:{port}"', config)


def gateway_mx(config: str, port: int) -> str:
    return re.sub(r"(\[gateway\]\nmx = .*\n)smtp_port = \d+", rf"\g<1>smtp_port = {port}", config)


def checked_server(config: str, port: int) -> str:
    return re.sub(r"\[check\]\nsmtp_port = \d+", f"[check]\nsmtp_port = {port}\ntimeout = 30", config)


@dataclass
class Case:
    activity: str  # the activity type held in flight at the kill
    kind: str = "domain"  # or "server"
    agent: bool = False  # the host agent is the process killed
    silent: Callable[[str, int], str] | None = None  # points the config at a silent port
    in_input: bool = False  # the silent peer travels in the move's input: the start names it too
    world: dict | None = None


CASES = {
    "dns-update": Case("apply_mx", silent=update_server),
    "convergence-poll": Case("poll_authoritative", world={"notify": "off"}),
    "portal-filing": Case("file_request"),
    "rcpt-probe": Case("probe_rcpt", silent=gateway_mx, in_input=True, world={"confirm_after": 10**9}),
    "checks": Case("check_server", kind="server", silent=checked_server),
    "agent-relay-test": Case("relay_test", kind="server", agent=True, world={"confirm_after": 0}),
}


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """TCP and UDP on 127.0.0.1 and 127.0.0.2 that take everything and never answer."""
    port = free_port()
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(hold, host, port) for host in ("127.0.0.1", "127.0.0.2")]
    datagrams = [
        (await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(host, port)))[0]
        for host in ("127.0.0.1", "127.0.0.2")
    ]
    yield port
    for writer in held:
        writer.close()
    for server in servers:
        server.close()
    for transport in datagrams:
        transport.close()


async def start(
    dev_env, world: Sandbox, case: Case, silent: int, agent_nft: list[str] | None
) -> tuple[WorkflowHandle, Path]:
    """The move, started against the real peers (the start checks that they answer), and the
    workers' own config, whose peer is silent."""
    settings = settings_for(world, dev_env, portal_mode="http", agent={"nft": agent_nft} if agent_nft else None)
    text = settings.source.read_text().replace("\ntimeout = 2\n", "\ntimeout = 30\n", 1)  # DNS waits long
    if case.silent:
        changed = case.silent(text, silent)
        assert changed != text
        text = changed
    config = settings.source.with_name("worker.toml")
    config.write_text(text)
    if case.in_input:
        settings = load_settings(config)
    if case.kind == "domain":
        move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="kim"))
        wid = await control.start_domain_move(dev_env.client, settings, move)
    else:
        move = await control.prepare_server_move(settings, request(agent=case.agent))
        wid = await control.start_server_move(dev_env.client, settings, move)
    return dev_env.client.get_workflow_handle(wid), config


@pytest.mark.parametrize("name", list(CASES))
async def test_a_killed_worker_is_replaced_within_seconds(name, dev_env, sandbox_factory, silent_port, request):
    case = CASES[name]
    world = sandbox_factory(**(case.world or {}))
    if name == "portal-filing":
        world.registry.respond_after = 120
    if case.agent:
        world.relays["external"].handler.delay = 120
    agent_nft = nft_in(request.getfixturevalue("netns")) if case.agent else None
    processes: list[subprocess.Popen] = []
    handle = None
    try:
        handle, config = await start(dev_env, world, case, silent_port, agent_nft)
        processes.append(start_worker(config))
        if case.agent:
            processes.append(start_worker(config, "--host", NEW))
        if case.activity == "poll_authoritative":  # past the quick first round, in a full window
            await until_stage(handle, "add_gateway_mx", "waiting")
        lost = await in_flight(handle, case.activity)
        victim = processes[-1]
        assert f"{victim.pid}@" in lost.last_worker_identity
        await asyncio.sleep(1)  # well into the attempt
        kill(victim)
        killed = time.time()
        processes.append(start_worker(config, *(["--host", NEW] if case.agent else [])))
        retried = await in_flight(handle, case.activity, timeout=120, after=lost.attempt)
        delay = started_at(retried) - killed
        print(f"{name}: {case.activity} attempt {retried.attempt} started {delay:.1f}s after the kill")
        assert f"{processes[-1].pid}@" in retried.last_worker_identity
        assert delay < BOUND, f"{case.activity}: the next attempt started {delay:.1f}s after the kill"
        assert retried.maximum_attempts == 0  # attempts lost this way use up no budget
    finally:
        for process in processes:
            if process.poll() is None:
                kill(process)
        if handle is not None:
            await terminate_running(dev_env.client, handle.id)


def mailmove_worker(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mailmove.cli", "--config", str(config), "worker"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(config.parent / "mailmove-worker.log", "ab"),
    )


async def test_sigterm_hands_an_activity_in_flight_back_at_once(dev_env, sandbox_factory):
    """The heartbeat timeout is a minute here: only a hand-back lets the filing go on sooner."""
    world = sandbox_factory(confirm_after=1)
    world.registry.respond_after = 120  # recorded at once, answered late: the filing stays in flight
    settings = settings_for(world, dev_env, portal_mode="http", timing={"heartbeat_timeout": 60})
    config = settings.source
    first = mailmove_worker(config)
    second = None
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="kim"))
    wid = await control.start_domain_move(dev_env.client, settings, move)
    handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)
    try:
        lost = await in_flight(handle, "file_request")
        assert f"{first.pid}@" in lost.last_worker_identity
        second = start_worker(config)
        await asyncio.sleep(3)  # the second worker polls
        first.send_signal(signal.SIGTERM)
        stopped = time.time()
        assert first.wait(15) == 0
        exited = time.time() - stopped
        retried = await in_flight(handle, "file_request", timeout=120, after=lost.attempt)
        delay = started_at(retried) - stopped
        print(f"SIGTERM: worker exited after {exited:.1f}s, the filing retried after {delay:.1f}s")
        assert exited < 5
        assert delay < 5, f"the filing was retried {delay:.1f}s after SIGTERM"
        assert f"{second.pid}@" in retried.last_worker_identity
        assert retried.last_failure.application_failure_info.type == WORKER_SHUTDOWN  # the message is encrypted
        world.registry.respond_after = 0
        result = await asyncio.wait_for(handle.result(), 90)
        history = await handle.fetch_history()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                kill(process)
        await terminate_running(dev_env.client, handle.id)
    assert result.state == MoveState.DONE
    assert len(world.registry.requests) == 1  # the retry sent the same idempotency key
    # the move, detection by independent sources included, replays as it ran
    replayer = Replayer(workflows=WORKFLOWS, data_converter=dev_env.client.data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None
