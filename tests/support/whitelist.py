"""A domain move with a Whitelist of three listed addresses, one of which (MISSING) the centre
withholds: the gateway refuses it until it is filed again or accepted as lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from mailmove.base.config import Settings
from mailmove.base.inputs import DomainMoveRequest
from mailmove.sandbox.world import Sandbox
from mailmove.service import control
from tests.support.domain_move import DOMAIN
from tests.support.moves import terminate_running
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

ADDRESSES = [f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"info@{DOMAIN}"]
MISSING = ADDRESSES[1]


@asynccontextmanager
async def withheld_move(
    time_env: WorkflowEnvironment, worker_for, sandbox_factory, tmp_path: Path
) -> AsyncIterator[tuple[Sandbox, Settings, WorkflowHandle]]:
    """The move on `time_env` with an hourly address check; terminated if it is left running."""
    world = sandbox_factory(confirm_after=0)
    world.registry.withheld.add(MISSING)  # the centre "forgot" bob
    settings = settings_for(world, time_env, portal_mode="http", timing={"probe_interval": 3600})
    await worker_for(time_env.client, settings)
    listing = tmp_path / "virtual"
    listing.write_text("".join(f"{a}  {a.split('@')[0]}@mailbox.{DOMAIN}\n" for a in ADDRESSES) + f"root@{DOMAIN} x\n")
    request = DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="alice", addresses_file=str(listing))
    wid = await control.start_domain_move(
        time_env.client, settings, await control.prepare_domain_move(settings, request)
    )
    try:
        yield world, settings, time_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)
    finally:
        await terminate_running(time_env.client, wid)
