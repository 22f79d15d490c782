"""An outage is not the move's error. An activity is bounded by its timeout plus
`timing.retry_limit`, so that a real error that keeps coming back ends in "needs attention"; but
when the whole bound passes with no worker taking an attempt (no host agent polling, here for
several bounds), the stage asks again instead of calling a person, and goes on once the agent is
back. On the dev server, with a bound of seconds."""

from __future__ import annotations

import asyncio

from mailmove.base.model import MoveState, StageState
from mailmove.service import control
from tests.support.firewall import nft_in
from tests.support.moves import status_of, terminate_running, until_stage
from tests.support.server_move import NEW, request
from tests.support.settings import settings_for
from workflows.server_move import ServerMoveWorkflow


async def test_no_agent_for_longer_than_the_bound_is_waited_out(dev_env, worker_for, agent_for, netns, sandbox_factory):
    world = sandbox_factory(confirm_after=0)
    timing = {"agent_timeout": 2, "retry_limit": 2, "probe_interval": 1}
    settings = settings_for(world, dev_env, portal_mode="http", timing=timing, agent={"nft": nft_in(netns)})
    await worker_for(dev_env.client, settings)
    move = await control.prepare_server_move(settings, request())
    handle = dev_env.client.get_workflow_handle_for(
        ServerMoveWorkflow.run, await control.start_server_move(dev_env.client, settings, move)
    )
    try:
        await until_stage(handle, "open_firewall", "running", timeout=60)
        await asyncio.sleep(4 * (move.timings.agent_timeout + move.timings.retry_limit))  # the bound, 4 times
        status = await status_of(handle)
        assert status.state != MoveState.NEEDS_ATTENTION and not status.attention, status.alerts
        assert next(s for s in status.stages if s.name == "open_firewall").state == StageState.RUNNING

        await agent_for(dev_env.client, settings, NEW)
        status = await until_stage(handle, "await_cutover", "waiting", timeout=90)
        assert status.transcript.passed and not status.attention
    finally:
        await terminate_running(dev_env.client, handle.id)
