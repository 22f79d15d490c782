"""A worker killed mid-stage, and a dev server restarted on its SQLite file: the move still
finishes, DNS is changed exactly once per stage and the portal holds exactly one request."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import MoveState
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.records import portal_requests
from tests.support.dns import serial_of, served_mx
from tests.support.domain_move import DOMAIN, FINAL
from tests.support.moves import until_stage
from tests.support.polling import wait_for
from tests.support.processes import kill, mailmove_sync, move_done, start_up, start_worker
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

FAST_RETRY = {
    "heartbeat_timeout": 2,
    "dns_timeout": 5,
    "portal_timeout": 4,
    "probe_timeout": 5,
    "convergence_window": 3,
    "convergence_pause": 0.5,
    "probe_interval": 1,
}


async def start_move(dev_env, world, **config):
    config_file = world.write_config(
        temporal_address=dev_env.client.service_client.config.target_host,
        portal_mode="http",
        task_queue=f"tq-{os.getpid()}-{time.monotonic_ns()}",
        timing=FAST_RETRY,
        **config,
    )
    settings = settings_for(world, dev_env, portal_mode="http", timing=FAST_RETRY, task_queue=_task_queue(config_file))
    worker = start_worker(config_file)
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="kim"))
    wid = await control.start_domain_move(dev_env.client, settings, move)
    return settings, config_file, worker, dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)


def _task_queue(config_file: Path) -> str:
    return tomllib.loads(config_file.read_text())["temporal"]["task_queue"]


def filed(settings, wid: str) -> list[tuple[str, str]]:
    with sessions(settings.database.url)() as session:
        return [(r.state, r.reference) for r in portal_requests(session, wid)]


async def test_worker_killed_in_add_gateway_mx(dev_env, sandbox_factory):
    world = sandbox_factory(notify="off", confirm_after=1)
    serial = serial_of(world.dns.primary.port, DOMAIN)
    settings, config, worker, handle = await start_move(dev_env, world)
    try:
        await until_stage(handle, "add_gateway_mx", "waiting")  # the update is made, the secondary lags
        kill(worker)  # in the middle of polling the authoritative servers
        assert serial_of(world.dns.primary.port, DOMAIN) == serial + 1
        worker = start_worker(config)
        world.dns.send_notify(DOMAIN)
        await until_stage(handle, "remove_legacy_mx", "waiting", timeout=60)
        world.dns.send_notify(DOMAIN)
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        kill(worker)
    assert result.state == MoveState.DONE
    assert served_mx(world.dns.primary.port, DOMAIN) == FINAL == served_mx(world.dns.secondary.port, DOMAIN)
    assert serial_of(world.dns.primary.port, DOMAIN) == serial + 2  # each change made exactly once
    assert len(world.registry.requests) == 1


async def test_worker_killed_in_request_domain(dev_env, sandbox_factory):
    world = sandbox_factory(confirm_after=1)
    world.registry.respond_after = 30  # the portal records the request, the reply is slow
    settings, config, worker, handle = await start_move(dev_env, world)
    try:
        await wait_for(lambda: len(world.registry.requests) == 1, timeout=30, what="the filing")
        assert filed(settings, handle.id) == [("submitting", "")]  # recorded before it was sent
        kill(worker)  # the reply is lost with the worker
        world.registry.respond_after = 0
        worker = start_worker(config)
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        kill(worker)
    assert result.state == MoveState.DONE
    assert len(world.registry.requests) == 1  # the retry sent the same idempotency key
    [(state, reference)] = filed(settings, handle.id)
    assert (state, reference) == ("filed", next(iter(world.registry.requests)))


@pytest.mark.temporal  # `mailmove up` starts its own
async def test_up_restarted_on_the_same_sqlite_file_finishes_the_move(sandbox_factory):
    """`mailmove up` (embedded dev server, SQLite under var/), killed mid-move and started again."""
    world = sandbox_factory(confirm_after=10**9)
    config = world.write_config(portal_mode="http", timing=FAST_RETRY)  # no address: the embedded stack
    log_file = config.parent / "up.log"

    def show() -> dict:
        return json.loads(mailmove_sync(config, "show", DOMAIN, "--json").stdout)

    stack = await start_up(config)
    try:
        mailmove_sync(config, "domain", "start", DOMAIN, "--legacy-mx", f"mail.{DOMAIN}")
        await wait_for(lambda: show()["status"]["stage"] == "await_registration", timeout=60, what="registration")
        db = world.root / "var" / "temporal.db"
        assert db.exists()
        subprocess.run(["pkill", "-KILL", "-f", str(db)], check=True)  # the dev server dies first
        kill(stack)
        world.registry.confirm_after = 0  # meanwhile the centre registers the domain
        stack = await start_up(config)
        try:
            await wait_for(lambda: move_done(config), timeout=90, interval=1, what="done after the restart")
        except AssertionError as exc:  # say where the move stands and what `up` printed
            shown = mailmove_sync(config, "show", DOMAIN, check=False).stdout
            raise AssertionError(shown + log_file.read_text()[-3000:]) from exc
        view = show()
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(30)
    assert view["execution"] == "COMPLETED" and view["status"]["state"] == "done"
    assert [a["action"] for a in view["audit"]].count("stage started") == 7
    assert served_mx(world.dns.primary.port, DOMAIN) == FINAL
    assert len(world.registry.requests) == 1
    assert not subprocess.run(["pgrep", "-f", str(db)], capture_output=True).stdout  # Ctrl-C stopped it all


async def test_up_with_a_cluster_address_runs_the_worker_against_it(dev_env, sandbox_factory):
    world = sandbox_factory(confirm_after=1)
    address = dev_env.client.service_client.config.target_host
    config = world.write_config(temporal_address=address, portal_mode="http", task_queue=f"tq-up-{time.monotonic_ns()}")
    stack = await start_up(config)
    try:
        assert f"Temporal cluster  {address}" in (config.parent / "up.log").read_text()
        mailmove_sync(config, "domain", "start", DOMAIN, "--legacy-mx", f"mail.{DOMAIN}")
        handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
        assert (await asyncio.wait_for(handle.result(), 60)).state == MoveState.DONE
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(30) == 0
    assert not (world.root / "var" / "temporal.db").exists()  # no embedded server was started
    await dev_env.client.service_client.check_health()  # and the cluster is still there
