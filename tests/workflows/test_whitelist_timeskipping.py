"""The Whitelist in a domain move, on the time-skipping server with the real activities: the
gateway stand-in accepts exactly the addresses the portal stand-in has on its Whitelist."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from mailmove.base.model import ConfirmInput, MoveState
from mailmove.service import control
from mailmove.store.db import sessions
from mailmove.store.records import portal_requests
from tests.support.domain_move import FINAL, WITH_LEGACY, both_serve
from tests.support.moves import reach, skip_to_end, status_of
from tests.support.whitelist import ADDRESSES, MISSING
from workflows.domain_move import DomainMoveWorkflow


async def test_a_refused_address_keeps_the_legacy_mx_until_it_is_filed(time_env, move):
    world, settings, handle = move
    status = await reach(time_env, handle, "await_registration", step=timedelta(minutes=30))
    while not status.stages[3].waiting_for.startswith("the gateway refuses"):
        await time_env.sleep(timedelta(minutes=30))
        status = await status_of(handle)
    assert f"not on the Whitelist: {MISSING}" in status.stages[3].waiting_for
    assert {a.address: a.state for a in status.addresses} == {
        ADDRESSES[0]: "accepted",
        MISSING: "refused",
        ADDRESSES[2]: "accepted",
    }
    with sessions(settings.database.url)() as session:  # one entry per address, root@ left out
        filed = sorted(r.subject for r in portal_requests(session, handle.id) if r.kind == "wl")
    assert filed == sorted(ADDRESSES)
    await time_env.sleep(timedelta(hours=5))  # checked again every hour, still refused
    status = await status_of(handle)
    assert status.stage == "await_registration" and status.stages[3].attempts >= 1
    both_serve(world, WITH_LEGACY)  # the legacy MX stays while an address is refused

    world.registry.withheld.clear()  # the centre enters bob
    result = await skip_to_end(time_env, handle)
    assert result.state == MoveState.DONE
    both_serve(world, FINAL)
    status = await status_of(handle)
    assert {a.state for a in status.addresses} == {"accepted"}
    assert "accepts all 3 listed addresses" in status.stages[3].detail


async def test_a_refused_address_accepted_as_lost(time_env, move):
    world, settings, handle = move
    status = await reach(time_env, handle, "await_registration", step=timedelta(minutes=30))
    while not status.stages[3].waiting_for.startswith("the gateway refuses"):
        await time_env.sleep(timedelta(minutes=30))
        status = await status_of(handle)
    with pytest.raises(WorkflowUpdateFailedError) as err:  # each refused address is named (test_recheck: none)
        await handle.execute_update(
            DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "carol", lost=[ADDRESSES[0]])
        )
    assert "lost: the gateway refuses 1 more address(es)" in str(err.value.cause) and MISSING in str(err.value.cause)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "carol", lost=["eve@elsewhere.test"])
        )
    await handle.execute_update(
        DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "carol", "bob left", lost=[MISSING])
    )
    result = await skip_to_end(time_env, handle)
    assert result.state == MoveState.DONE
    status = await status_of(handle)
    assert {a.address: a.state for a in status.addresses}[MISSING] == "lost"
    shown = await control.show(time_env.client, settings, handle.id)
    assert any(e["actor"] == "carol" and f"accepted as lost: {MISSING}" in e["detail"] for e in shown.audit)
