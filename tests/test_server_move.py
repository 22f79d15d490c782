"""The whole server move on the dev server: the worker in this process, the host agent as a
process of its own (`worker.py --host`), BIND serving the forward and reverse zones, the
portal and relay stand-ins, nftables in a namespace of the test's own."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from activities.firewall import covered
from mailmove import control
from sandbox.world import Sandbox
from tests.conftest import nft_in, settings_for, status_of, terminate_running, until_stage, wait_for
from tests.test_recovery import kill, start_worker
from tests.workflows.test_server_move_timeskipping import NEW, OLD, filings, firewall_of, request
from workflows.model import CancelInput, ConfirmInput, MoveState, StageState
from workflows.server_move import ServerMoveWorkflow, firewall_plan

FAST = {
    "probe_interval": 1,
    "relay_retry_initial": 1,
    "relay_retry_max": 2,
    "heartbeat_timeout": 3,
    "portal_timeout": 5,
    "agent_timeout": 90,
}


@pytest.fixture
async def server_move(dev_env, worker_for, netns):
    """Start a move with an in-process worker and a host agent process; agents are killed after."""
    agents, handles = [], []

    async def begin(world: Sandbox, req=None, agent: bool = True, before_start=None, postconf=None):
        agent_config = {"nft": nft_in(netns), **({"postconf": postconf} if postconf else {})}
        settings = settings_for(world, dev_env, portal_mode="http", timing=FAST, agent=agent_config)
        await worker_for(dev_env.client, settings)
        if agent:
            agents.append(start_worker(settings.source, "--host", NEW))
        move = await control.prepare_server_move(settings, req or request())
        if before_start:
            before_start()
        wid = await control.start_server_move(dev_env.client, settings, move)
        handles.append(dev_env.client.get_workflow_handle_for(ServerMoveWorkflow.run, wid))
        return settings, move, handles[-1], agents

    yield begin
    for process in agents:
        if process.poll() is None:
            kill(process)
    await terminate_running(dev_env.client, *(h.id for h in handles))


async def test_a_server_move_end_to_end(server_move, sandbox_factory, netns, dev_env, tmp_path):
    world = sandbox_factory(confirm_after=1)
    (tmp_path / "main.cf").write_text("relayhost = [smtp.old-relay.example]\n")  # Postfix not yet switched
    (tmp_path / "master.cf").write_text("")
    postconf = ["postconf", "-c", str(tmp_path)]
    settings, move, handle, _ = await server_move(world, request(send=True), postconf=postconf)
    status = await until_stage(handle, "await_cutover", "waiting", timeout=90)
    [warning] = status.warnings
    assert f"set in main.cf: relayhost = [{move.relay.host}]:{move.relay.port}; smtp_tls_security_level" in warning
    assert firewall_of(netns) == covered(firewall_plan(move))
    assert status.firewall_change.changed and set(status.firewall_change.added) == covered(firewall_plan(move))
    assert status.transcript.passed and status.transcript.queue_id
    assert world.relays["external"].handler.seen[-1].peer == "127.0.0.2"
    assert status.identity.reverse[0].ptr == [NEW] and status.identity.old_addresses == ["127.0.0.1"]

    shown = await control.show(dev_env.client, settings, control.workflow_id(NEW, settings))
    assert shown.status.kind == "server" and shown.execution == "RUNNING"
    await control.confirm(dev_env.client, handle.id, ConfirmInput("await_cutover", "bob", "switched"))
    result = await handle.result()
    assert result.state == MoveState.DONE
    assert filings(world) == [("tsl", NEW, "127.0.0.2"), ("tsl-removal", OLD, "127.0.0.1")]


async def test_preflight_catches_a_ptr_that_names_another_host(server_move, sandbox_factory):
    world = sandbox_factory()
    req = request(new="mx3.chem.sandbox.test", new_ipv4="127.0.0.3")
    settings, move, handle, _ = await server_move(world, req, agent=False)
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    assert "PTR of 127.0.0.3 names www.chem.sandbox.test, not mx3.chem.sandbox.test" in str(err.value.cause)
    assert "IN PTR mx3.chem.sandbox.test." in str(err.value.cause)  # what to set
    status = await status_of(handle)
    assert status.stages[0].state == StageState.FAILED and status.state == MoveState.FAILED
    assert filings(world) == []  # nothing filed for a server the centre would refuse


async def test_a_host_agent_killed_during_the_relay_test(server_move, sandbox_factory):
    """The relay keeps its RCPT reply back; the agent dies; a new agent finishes the stage."""
    world = sandbox_factory(confirm_after=0)
    relay = world.relays["external"].handler
    relay.delay = 120
    settings, move, handle, agents = await server_move(world)

    async def at_rcpt() -> bool:
        return bool(relay.seen)

    await wait_for(at_rcpt, timeout=60, what="the relay test to reach RCPT")
    kill(agents[0])
    relay.delay = 0
    agents.append(start_worker(settings.source, "--host", NEW))
    status = await until_stage(handle, "await_cutover", "waiting", timeout=60)
    assert status.transcript.passed
    assert len(relay.seen) >= 2  # the second agent ran the test again from the start
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the lost attempt timed out by heartbeat and was retried


async def test_cancel_in_preflight_changes_nothing(server_move, sandbox_factory, netns, dev_env):
    """The resolver stops answering after the input was checked: preflight retries its lookup,
    and a cancel then ends the move with nothing filed and no rule added."""
    world = sandbox_factory()
    settings, move, handle, _ = await server_move(world, before_start=world.dns.resolver.stop)
    status = await until_stage(handle, "preflight", "running")
    reply = await control.cancel(dev_env.client, handle.id, CancelInput("carol"))
    assert reply == "cancelled; nothing had been changed"
    assert (await handle.result()).state == MoveState.CANCELLED
    assert filings(world) == [] and firewall_of(netns) == set()
    assert status.stages[1].state == StageState.PENDING
