"""The whole server move on the dev server: the worker in this process, the host agent as a
process of its own (`worker.py --host`), BIND serving the forward and reverse zones, the
portal and relay stand-ins, nftables in a namespace of the test's own, and (`--configure-mta`)
a real Postfix of the test's own that the agent sets to relay through the relay stand-in."""

from __future__ import annotations

import email

import pytest
from temporalio.client import WorkflowFailureError

from activities.firewall import covered
from activities.postfix import RECORD
from mailmove.base.model import CancelInput, ConfirmInput, MoveState, StageState
from mailmove.base.vocabulary import RelayScope
from mailmove.sandbox.world import RELAYS, Sandbox
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.records import audit_trail
from tests.support.firewall import firewall_of, nft_in
from tests.support.moves import status_of, terminate_running, until_stage
from tests.support.polling import wait_for
from tests.support.processes import kill, start_worker
from tests.support.server_move import NEW, OLD, filings, request
from tests.support.settings import settings_for
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

    async def begin(world: Sandbox, req=None, agent: bool = True, before_start=None, postfix_dir=None, postfix=None):
        agent_config = {"nft": nft_in(netns), **({"postfix_config_dir": postfix_dir} if postfix_dir else {})}
        agent_config |= postfix.agent_settings() if postfix else {}
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
    settings, move, handle, _ = await server_move(world, request(send=True), postfix_dir=str(tmp_path))
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


async def test_the_agent_sets_postfix_sends_a_probe_through_it_and_a_cancel_restores_it(
    server_move, sandbox_factory, local_postfix, dev_env
):
    """`--configure-mta` with a real Postfix (the new server's: it sends from 127.0.0.2, and knows
    the relay's name from a hosts file of its own): main.cf is set, the probe message reaches the
    relay stand-in through it, and a cancel at the cut-over puts main.cf's values back."""
    world = sandbox_factory(confirm_after=1)
    relay = world.relays["external"]
    before = "relayhost = [smtp.old-relay.example]\nsmtp_bind_address = 127.0.0.2\n"
    local = local_postfix(before, hosts={RELAYS[RelayScope.EXTERNAL]: relay.host})
    original = local.explicit()
    settings, move, handle, _ = await server_move(world, request(configure_mta=True), postfix=local)
    status = await until_stage(handle, "await_cutover", "waiting", timeout=120)
    assert status.warnings == []  # the stage set what the check found wrong
    assert local.explicit() == {
        **original,
        "relayhost": f"[{move.relay.host}]:{move.relay.port}",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
    }
    assert status.postfix_change.changed and status.postfix_change.previous == original
    probe = status.mta_probe
    assert probe.relay.startswith(f"{move.relay.host}[{relay.host}]:") and probe.answer.startswith("250 ")
    [message] = [email.message_from_bytes(m) for m in relay.handler.messages if b"X-Mailmove-Probe" in m]
    assert message["Message-ID"] == probe.message_id and message["Date"]
    seen = relay.handler.seen[-1]
    assert (seen.peer, seen.tls, seen.rcpt) == ("127.0.0.2", True, "someone@example.org")
    configured = next(s for s in status.stages if s.name == "configure_mta")
    assert configured.state == StageState.DONE and probe.queue_id in configured.detail
    with sessions(settings.database.url)() as session:
        [changed] = [e.detail for e in audit_trail(session, handle.id) if e.action == "changed"]
    assert "main.cf before: relayhost = [smtp.old-relay.example]; smtp_tls_CAfile (not set)" in changed

    reply = await control.cancel(dev_env.client, handle.id, CancelInput("carol", "not yet"))
    assert reply.startswith(f"cancelling: restore Postfix's relay lines on {NEW}; remove the firewall rules")
    result = await handle.result()
    assert result.state == MoveState.CANCELLED and result.message.startswith("cancelled; restore Postfix's")
    assert local.explicit() == original and not (local.config_dir / RECORD).exists()
    status = await status_of(handle)
    undone = next(s for s in status.stages if s.name == "configure_mta")
    assert undone.detail.startswith("undone: restored relayhost = [smtp.old-relay.example]")


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
