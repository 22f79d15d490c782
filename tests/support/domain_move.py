"""The domain move most tests make: chem.sandbox.test, from its own mail server to the gateway."""

from __future__ import annotations

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.dns import DnsActivities
from mailmove.base.config import Settings
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import MxChange, MxRecord, mx_key
from mailmove.sandbox.world import GATEWAY_MX, Sandbox
from mailmove.service import control
from tests.support.dns import served_mx
from tests.support.polling import wait_for
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

DOMAIN = "chem.sandbox.test"
ORIGINAL = mx_key([MxRecord(10, f"mail.{DOMAIN}")])
WITH_LEGACY = mx_key([MxRecord(10, h) for h in GATEWAY_MX] + [MxRecord(5, f"mail.{DOMAIN}")])
FINAL = mx_key([MxRecord(10, h) for h in GATEWAY_MX])


async def start(
    time_env: WorkflowEnvironment, worker_for, world: Sandbox, portal_mode="manual", before_start=None, **timing
) -> tuple[Settings, WorkflowHandle]:
    """Start the move of DOMAIN with an in-process worker (`worker_for`, the fixture) of its own."""
    settings = settings_for(world, time_env, portal_mode=portal_mode, timing=timing)
    await worker_for(time_env.client, settings)
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", actor="alice"))
    if before_start:
        before_start()
    wid = await control.start_domain_move(time_env.client, settings, move)
    return settings, time_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)


def both_serve(world: Sandbox, expected) -> None:
    """Both of the sandbox's authoritative servers serve `expected` as DOMAIN's MX set."""
    assert served_mx(world.dns.primary.port, DOMAIN) == expected
    assert served_mx(world.dns.secondary.port, DOMAIN) == expected


async def set_mx(settings: Settings, world: Sandbox, target, accept) -> None:
    """The RFC 2136 UPDATE of a person restoring an old zone file (or fixing it again): DOMAIN's MX
    set made `target` if it is `accept` now; once both authoritative servers serve it."""
    await DnsActivities(settings).apply_mx(MxChange(DOMAIN, DOMAIN, list(target), [list(accept)], 3))
    await wait_for(lambda: served_mx(world.dns.secondary.port, DOMAIN) == mx_key(list(target)), what="the secondary")
    both_serve(world, mx_key(list(target)))
