"""`mailmove check` inside the moves: `preflight` runs the checks of stage before (an error
stops the move with its fix, a warning is shown), `done` runs those of stage after; both
reports are stored and summed up in the status."""

from __future__ import annotations

import time
from datetime import timedelta

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Replayer

from mailmove.base.config import read_tsig_keyfile
from mailmove.base.model import MoveState
from mailmove.store.db import sessions
from mailmove.store.records import check_reports
from tests.support.dns import serial_of, served_mx
from tests.support.domain_move import DOMAIN, ORIGINAL, start
from tests.support.moves import skip_to_end, status_of
from tests.support.payloads import encrypting
from workflows.domain_move import DomainMoveWorkflow


def publish_txt(world, *texts: str) -> None:
    """What a department admin would do: TXT records at the domain's apex, on the primary."""
    key = next(iter(read_tsig_keyfile(world.dns.keyfile).values()))
    ring = dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})
    update = dns.update.UpdateMessage(DOMAIN, keyring=ring, keyname=key.name)
    for text in texts:
        update.add(f"{DOMAIN}.", 3, "TXT", f'"{text}"')
    dns.query.tcp(update, "127.0.0.1", port=world.dns.primary.port, timeout=3)
    # the secondary transfers on NOTIFY; before it has, the check rightly warns of a stale serial
    deadline = time.monotonic() + 10
    while serial_of(world.dns.secondary.port, DOMAIN) != serial_of(world.dns.primary.port, DOMAIN):
        assert time.monotonic() < deadline, "the secondary did not transfer the change"
        time.sleep(0.05)


def stored(settings, wid: str) -> dict:
    with sessions(settings.database.url)() as session:
        return {stage: report for stage, report in check_reports(session, wid)}


async def test_a_check_error_stops_preflight_with_its_fix(time_env, worker_for, sandbox_factory):
    world = sandbox_factory()
    settings, handle = await start(
        time_env, worker_for, world, before_start=lambda: publish_txt(world, "v=spf1 mx -all", "v=spf1 a -all")
    )
    with pytest.raises(WorkflowFailureError) as err:
        await handle.result()
    message = str(err.value.cause)
    assert "preflight: more than one SPF record: merge the SPF records into one" in message
    assert served_mx(world.dns.primary.port, DOMAIN) == ORIGINAL  # nothing was changed
    report = stored(settings, handle.id)["preflight"]
    assert report.stage == "before" and report.worst == "error"
    assert [c.id for c in report.errors] == ["spf.record"]


async def test_warnings_are_shown_and_done_stores_the_final_report(time_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=0)
    settings, handle = await start(
        time_env, worker_for, world, portal_mode="http", probe_interval=60,
        before_start=lambda: publish_txt(world, "v=spf1 mx -all"),
    )  # fmt: skip
    result = await skip_to_end(time_env, handle, timedelta(minutes=1))
    assert result.state == MoveState.DONE
    # after the move an SPF record without the gateway is an error: said, with the fix
    assert "Final check: 1 error, 1 notice (the SPF record does not cover the gateway" in result.message
    assert "add `include:_spf.gw.sandbox.test` to the SPF record of chem.sandbox.test" in result.message

    status = await status_of(handle)
    preflight = next(s for s in status.stages if s.name == "preflight")
    assert "warnings: the SPF record does not cover the gateway" in preflight.detail
    assert status.checks == {"preflight": "1 warning, 1 notice", "done": "1 error, 1 notice"}
    reports = stored(settings, handle.id)
    assert (reports["preflight"].stage, reports["preflight"].worst) == ("before", "warning")
    assert (reports["done"].stage, reports["done"].worst) == ("after", "error")
    assert next(c for c in reports["done"].checks if c.id == "mx.plan").verdict == "ok"
    await Replayer(workflows=[DomainMoveWorkflow], data_converter=encrypting()).replay_workflow(
        await handle.fetch_history()
    )
