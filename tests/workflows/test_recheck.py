"""A plain confirm while listed addresses are refused checks them again at once and answers with
the result: on the time-skipping server with the real activities (no time passes for the check);
on the dev server, whose timeouts and retries are the real server's, through `mailmove confirm`,
with the gateway down and with a gateway that never answers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from mailmove.base.model import ConfirmInput, MoveState, MoveStatus
from mailmove.service import control
from tests.support.domain_move import DOMAIN, WITH_LEGACY, both_serve
from tests.support.moves import reach, skip_to_end, status_of, terminate_running, until_stage
from tests.support.polling import wait_for
from tests.support.processes import mailmove
from tests.support.settings import settings_for
from tests.support.whitelist import MISSING
from workflows.domain_move import SHOWN, DomainMoveWorkflow

STAGE = "await_registration"
PROBE_TIMEOUT = 5  # below the sandbox's smtp.timeout (10 s), which a silent gateway would run into first
LISTED = [f"user{n:02d}@{DOMAIN}" for n in range(SHOWN + 2)]  # more than an answer names


@pytest.fixture
async def cli_move(dev_env, worker_for, sandbox_factory):
    """The CLI's world with the hourly check (a check every 2 s would race the confirms) and a
    check's attempt cut after PROBE_TIMEOUT s; the centre confirms nothing by itself."""
    world = sandbox_factory(confirm_after=10**9)
    timing = {"probe_interval": 3600, "probe_timeout": PROBE_TIMEOUT}
    settings = settings_for(world, dev_env, portal_mode="manual", timing=timing)
    await worker_for(dev_env.client, settings)
    yield world, world.root / "mailmove.toml"
    await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")


async def refusing(env: WorkflowEnvironment, handle: WorkflowHandle) -> MoveStatus:
    """Until the move waits at await_registration because the gateway refuses a listed address."""
    status = await reach(env, handle, STAGE, step=timedelta(minutes=30))
    while not status.stages[3].waiting_for.startswith("the gateway refuses"):
        await env.sleep(timedelta(minutes=30))
        status = await status_of(handle)
    return status


def asked(world, address: str) -> int:
    """How often the gateway stand-in was asked RCPT TO:<address>."""
    return sum(1 for _, _, rcpt in world.smtp.handler.rcpts if rcpt == address)


async def test_a_plain_confirm_checks_the_refused_addresses_now(time_env, move):
    world, settings, handle = move
    before = await refusing(time_env, handle)
    assert f"`mailmove confirm {handle.id} {STAGE}` checks again now (else every 3600s)" in before.stages[3].waiting_for

    times = asked(world, MISSING)
    answer = await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput(STAGE, "carol", "bob filed"))
    assert asked(world, MISSING) == times + 1  # asked again at once, not an hour later
    assert answer == f"{STAGE}: checked again: {before.stages[3].waiting_for}", answer
    assert f"refuses 1 listed address(es), not on the Whitelist: {MISSING};" in answer
    status = await status_of(handle)  # still refused: the list, the wait and the legacy MX stay
    assert status.stage == STAGE and status.stages[3].state.value == "waiting"
    assert status.stages[3].waiting_for == before.stages[3].waiting_for
    assert {a.address: a.state for a in status.addresses}[MISSING] == "refused"
    both_serve(world, WITH_LEGACY)

    world.registry.withheld.clear()  # the centre enters bob
    answer = await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput(STAGE, "carol"))
    assert answer.startswith(f"{STAGE}: checked again: ") and answer.endswith(
        "accepts all 3 listed addresses; the move goes on"
    ), answer

    async def registered() -> bool:
        return (await status_of(handle)).stages[3].state.value == "done"

    await wait_for(registered, what="await_registration done without time passing")
    assert (await skip_to_end(time_env, handle)).state == MoveState.DONE
    shown = await control.show(time_env.client, settings, handle.id)
    rechecks = [e for e in shown.audit if e["action"] == "confirm" and e["actor"] == "carol"]
    assert [(e["detail"], e["result"]) for e in rechecks] == [
        ("bob filed", f"{STAGE}: checking again now"),
        ("", f"{STAGE}: checking again now"),
    ]


async def refused_through_the_cli(config, env: WorkflowEnvironment) -> WorkflowHandle:
    """A move of LISTED addresses whose forms never reached the portal stand-in (manual mode):
    once a person confirms the registration, the gateway refuses every one."""
    listing = config.parent / "addresses"
    listing.write_text("".join(f"{a}\n" for a in LISTED))
    start = ("domain", "start", DOMAIN, "--legacy-mx", f"mail.{DOMAIN}", "--addresses", str(listing))
    assert (await mailmove(config, *start))[0] == 0
    handle = env.client.get_workflow_handle_for(DomainMoveWorkflow.run, f"domain-move:{DOMAIN}")
    await until_stage(handle, "request_domain", "waiting")
    assert (await mailmove(config, "confirm", DOMAIN, "request_domain", "--note", "filed"))[0] == 0
    await until_stage(handle, STAGE, "waiting")
    assert (await mailmove(config, "confirm", DOMAIN, STAGE, "--note", "registered"))[0] == 0

    async def refused() -> bool:
        return (await status_of(handle)).stages[3].waiting_for.startswith(f"the gateway refuses {len(LISTED)} ")

    await wait_for(refused, what="every address refused")
    # the list is in the status a moment before the move takes a confirm again (its "waiting"
    # transition is being recorded meanwhile; a confirm then is refused as "not waiting")
    await asyncio.sleep(1)
    return handle


async def test_mailmove_confirm_prints_the_check(cli_move, dev_env):
    world, config = cli_move
    await refused_through_the_cli(config, dev_env)
    code, out, err = await mailmove(config, "confirm", DOMAIN, STAGE)
    assert code == 0, err
    out = " ".join(out.split())  # as one line (Rich wraps it at the terminal's width)
    assert f"{STAGE}: checked again: the gateway refuses {len(LISTED)} listed address(es)" in out
    assert f"{', '.join(LISTED[:SHOWN])} … (+2 more)" in out and LISTED[-1] not in out and "--lost" in out
    code, out, err = await mailmove(config, "confirm", DOMAIN, STAGE, "--lost", LISTED[0])
    assert code == 2 and f"lost: the gateway refuses {len(LISTED) - 1} more address(es)" in err


async def test_a_check_that_cannot_run_is_the_answer(cli_move, dev_env):
    """The check a confirm asks for has one attempt: its failure is the answer at once (the
    time-skipping server holds a heartbeating activity's failure until its schedule-to-close
    timeout, hence the dev server)."""
    world, config = cli_move
    handle = await refused_through_the_cli(config, dev_env)
    before = (await status_of(handle)).stages[3].waiting_for
    world.smtp.stop()  # the gateway is down: every try of the check fails
    answer = await control.confirm(dev_env.client, handle.id, ConfirmInput(STAGE, "carol"))
    assert answer.startswith(f"{STAGE}: the check could not run: no gateway MX gave an answer"), answer
    assert answer.endswith(before)  # the refused list, unchanged
    status = await status_of(handle)
    assert status.stage == STAGE and status.stages[3].waiting_for == before
    assert {a.state for a in status.addresses} == {"refused"}


async def test_a_gateway_that_never_answers_is_cut_at_the_timeout(cli_move, dev_env):
    world, config = cli_move
    handle = await refused_through_the_cli(config, dev_env)
    world.smtp.stop()
    connected = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append(writer)
        await reader.read()  # no banner, ever

    tarpit = await asyncio.start_server(silent, "127.0.0.1", world.smtp.port)
    try:
        began = time.monotonic()
        answer = await control.confirm(dev_env.client, handle.id, ConfirmInput(STAGE, "carol"))
        waited = time.monotonic() - began
    finally:
        tarpit.close()
        for writer in connected:
            writer.close()
    assert connected and answer.startswith(f"{STAGE}: the check could not run: activity StartToClose timeout"), answer
    assert PROBE_TIMEOUT <= waited < 10, waited  # the attempt's timeout, not the SMTP dialogue's
