"""DomainMoveWorkflow's logic on the time-skipping server with fake activities
(tests/support/fake_activities.py), no real server: every stage in order, a cancel at each
stage and what it puts back, reminders, escalation and extend, confirms, the retry of a stage
that needs attention, and the refusals of preflight."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import CancelledError

from mailmove.base.model import (
    ConvergenceReport,
    DomainMoveInput,
    ExtendInput,
    MoveState,
    MoveStatus,
    MxRecord,
    ServerView,
    StageState,
    StageStatus,
    Timings,
    mx_key,
)
from mailmove.base.vocabulary import DOMAIN_STAGES
from tests.support.fake_activities import Gate, fails, normally, returns, with_error
from tests.support.fake_world import FakeWorld
from workflows.domain_move import DomainMoveWorkflow

pytestmark = pytest.mark.temporal

DOMAIN = "chem.test"
LEGACY = f"mail.{DOMAIN}"
GATEWAY = ["a.mx.gw.test", "b.mx.gw.test"]
ORIGINAL = (MxRecord(10, LEGACY),)
WITH_LEGACY = mx_key([*(MxRecord(10, h) for h in GATEWAY), MxRecord(5, LEGACY)])
FINAL = mx_key([MxRecord(10, h) for h in GATEWAY])
HOUR, DAY = 3600, 86400


def move(portal_mode: str = "http", dns_mode: str = "rfc2136", **timings: float) -> DomainMoveInput:
    return DomainMoveInput(
        DOMAIN,
        LEGACY,
        list(GATEWAY),
        dns_mode=dns_mode,
        portal_mode=portal_mode,
        portal_form="https://portal.test/domain",
        wl_form="https://portal.test/whitelist",
        contact=f"postmaster@{DOMAIN}",
        timings=Timings(**timings),
    )


def stage_of(status: MoveStatus, name: str) -> StageStatus:
    return next(s for s in status.stages if s.name == name)


@pytest.mark.parametrize(
    ("registered", "seen"),
    [("portal", "the portal confirmed request REQ-1"), ("gateway", "a.mx.gw.test accepts postmaster@chem.test")],
)
async def test_every_stage_in_order_to_done(world: FakeWorld, registered: str, seen: str) -> None:
    fakes = world.fakes
    fakes.registered = registered
    handle = await world.start(DomainMoveWorkflow.run, move())
    result = await world.finish(handle)

    assert result.state == MoveState.DONE and f"the old server {LEGACY} may now be switched off" in result.message
    assert fakes.actions(handle.id, "stage started") == [("stage started", s) for s in DOMAIN_STAGES]
    status = await world.status(handle)
    assert (status.state, status.stage, status.attention) == (MoveState.DONE, "done", False)
    assert [s.state for s in status.stages] == [StageState.DONE] * len(DOMAIN_STAGES)
    assert [mx_key(c.target) for c in fakes.args("apply_mx")] == [WITH_LEGACY, FINAL]
    assert fakes.served(DOMAIN) == FINAL
    assert stage_of(status, "await_registration").detail.startswith(seen)
    # the old set may stay in caches for its TTL after the last server dropped it: not done before
    removed, propagated = stage_of(status, "remove_legacy_mx"), stage_of(status, "await_propagation")
    assert propagated.ended - removed.ended >= timedelta(seconds=fakes.ttl)
    assert [f.kind for f in fakes.filings.values()] == ["domain"]
    assert [q.stage for q in fakes.args("check_domain")] == ["before", "after"]
    assert [s.stage for s in fakes.args("store_report")] == ["preflight", "done"]
    assert [n.event for n in fakes.args("send_notice")] == ["waiting", "done"]


async def test_a_person_files_the_request_and_confirms_the_registration(world: FakeWorld) -> None:
    fakes = world.fakes
    handle = await world.start(DomainMoveWorkflow.run, move("manual"))
    status = await world.until(handle, "request_domain")
    assert status.form == {"form": "https://portal.test/domain", "domain": DOMAIN, "mx": ", ".join(GATEWAY)}
    assert fakes.served(DOMAIN) == WITH_LEGACY  # the gateway takes mail before the centre is asked
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await world.confirm(handle, "await_registration")
    assert "not waiting for a confirm (waiting: request_domain)" in str(refused.value.cause)
    assert await world.confirm(handle, "request_domain", "alice", "ticket 42") == "request_domain confirmed"

    status = await world.until(handle, "await_registration")
    assert stage_of(status, "request_domain").detail.startswith("filed by hand: ticket 42")
    assert f"mailmove confirm {handle.id} await_registration" in stage_of(status, "await_registration").waiting_for
    assert fakes.served(DOMAIN) == WITH_LEGACY  # the legacy MX stays until the domain is registered
    await world.confirm(handle, "await_registration", "bob", "HRZ mail of 12 May")
    assert (await world.finish(handle)).state == MoveState.DONE

    status = await world.status(handle)
    assert stage_of(status, "await_registration").detail == "confirmed by bob: HRZ mail of 12 May"
    confirms = [(t.actor, t.stage) for t in fakes.transitions(handle.id) if t.action == "confirm"]
    assert confirms == [("alice", "request_domain"), ("bob", "await_registration")]
    assert fakes.filings == {}  # nothing went to the portal
    assert fakes.served(DOMAIN) == FINAL


@pytest.mark.parametrize("stage", ["preflight", "add_gateway_mx", "request_domain", "await_registration"])
async def test_a_cancel_at_each_stage_puts_the_mx_set_back(world: FakeWorld, stage: str) -> None:
    fakes = world.fakes
    gate = Gate()
    held = {"preflight": "inspect_zone", "add_gateway_mx": "poll_authoritative"}.get(stage)
    if held:
        fakes.script(held, gate)
    handle = await world.start(DomainMoveWorkflow.run, move("manual"))
    if held:
        await gate.reached()
    else:
        if stage == "await_registration":
            await world.until(handle, "request_domain")
            await world.confirm(handle, "request_domain")
        await world.until(handle, stage)

    answer = await world.cancel(handle)
    result = await world.finish(handle)

    status = await world.status(handle)
    assert result.state == status.state == MoveState.CANCELLED
    if stage == "preflight":
        assert answer == "cancelled; nothing had been changed"
        assert result.message == "cancelled before anything was changed"
        assert fakes.args("apply_mx") == []
    else:
        assert answer == f"cancelling: the MX set will be restored to 10 {LEGACY}."
        assert result.message == f"cancelled; the MX set is restored to 10 {LEGACY}."
        restore = fakes.args("apply_mx")[-1]
        assert (mx_key(restore.target), [mx_key(a) for a in restore.accept]) == (ORIGINAL, [WITH_LEGACY, ORIGINAL])
    assert fakes.served(DOMAIN) == ORIGINAL
    assert gate.cancelled == bool(held)  # a held activity is cancelled, and waited for, before the undo
    at = DOMAIN_STAGES.index(stage)
    assert [s.state for s in status.stages] == (
        [StageState.DONE] * at + [StageState.FAILED] + [StageState.SKIPPED] * (len(DOMAIN_STAGES) - at - 1)
    )
    assert stage_of(status, stage).detail == "cancelled by carol"
    assert fakes.actions(handle.id, "cancel", "cancelled") == [("cancel", stage), ("cancelled", stage)]


@pytest.mark.parametrize(
    ("stage", "held", "before"),
    [("remove_legacy_mx", "apply_mx", 1), ("await_propagation", None, 0), ("done", "poll_authoritative", 2)],
)
async def test_no_cancel_once_the_legacy_mx_goes(world: FakeWorld, stage: str, held: str | None, before: int) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    if stage == "done":
        fakes.ttl = 1  # await_propagation waits out the old TTL: in real time, time not skipping
    gate = Gate()
    if held:
        fakes.script(held, *[normally] * before, gate)
    handle = await world.start(DomainMoveWorkflow.run, move())
    if held:
        await gate.reached()
    else:
        await world.until(handle, stage)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await world.cancel(handle)
    assert "a cancel would not restore it" in str(refused.value.cause)
    gate.release()
    assert (await world.finish(handle)).state == MoveState.DONE
    assert fakes.served(DOMAIN) == FINAL


async def test_a_cancel_through_temporal_compensates_too(world: FakeWorld) -> None:
    handle = await world.start(DomainMoveWorkflow.run, move("manual"))
    await world.until(handle, "request_domain")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failed:
        await world.finish(handle)
    assert isinstance(failed.value.cause, CancelledError)
    assert world.fakes.served(DOMAIN) == ORIGINAL
    assert world.fakes.actions(handle.id, "cancelled")[-1] == ("cancelled", "request_domain")


async def test_reminders_escalation_and_extend(world: FakeWorld) -> None:
    fakes = world.fakes
    handle = await world.start(
        DomainMoveWorkflow.run, move(probe_interval=DAY, reminder_interval=6 * HOUR, escalate_after=2 * DAY)
    )
    await world.until(handle, "await_registration")

    await world.skip(timedelta(hours=25))
    status = await world.status(handle)
    assert (status.state, status.attention) == (MoveState.WAITING, False)
    assert len(fakes.actions(handle.id, "reminder")) == 4  # every 6 hours
    assert stage_of(status, "await_registration").attempts == 2  # the centre was looked for daily
    assert len(fakes.args("request_status")) == len(fakes.args("probe_rcpt")) == 2

    await world.skip(timedelta(days=1))
    status = await world.status(handle)
    assert (status.state, status.attention) == (MoveState.NEEDS_ATTENTION, True)
    assert "await_registration: no registration after 2 days" in status.alerts
    assert len(fakes.actions(handle.id, "reminder")) == 8  # the wait goes on
    overdue = fakes.args("send_notice")[-1]
    assert (overdue.event, overdue.to) == ("overdue", f"postmaster@{DOMAIN}")
    assert overdue.subject == f"[mailmove] {DOMAIN} needs attention at await_registration"

    answer = await world.update(handle, "extend", ExtendInput(DAY, "carol", "centre on holiday"))
    assert answer.startswith("the wait now escalates at")
    status = await world.status(handle)
    assert (status.state, status.attention) == (MoveState.WAITING, False)
    await world.skip(timedelta(hours=12))
    assert (await world.status(handle)).state == MoveState.WAITING
    await world.skip(timedelta(hours=13))  # past the extended day
    assert (await world.status(handle)).state == MoveState.NEEDS_ATTENTION
    assert len(fakes.actions(handle.id, "escalated")) == 2
    assert [(t.actor, t.action) for t in fakes.transitions(handle.id) if t.action == "extend"] == [("carol", "extend")]

    await world.until(handle, "await_registration")
    await world.confirm(handle, "await_registration", "bob", "registered")
    assert (await world.finish(handle)).state == MoveState.DONE
    assert not (await world.status(handle)).attention


async def test_a_failed_stage_needs_attention_and_a_confirm_retries_it(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.script("apply_mx", fails("UpdateRefused", "the primary refused the update: REFUSED"))
    handle = await world.start(DomainMoveWorkflow.run, move())
    status = await world.until(handle, "add_gateway_mx")

    assert (status.state, status.attention) == (MoveState.NEEDS_ATTENTION, True)
    failed = stage_of(status, "add_gateway_mx")
    refusal = "UpdateRefused: the primary refused the update: REFUSED"  # an error's type is part of its text
    assert (failed.last_error, failed.attempts) == (refusal, 1)
    assert f"mailmove confirm {handle.id} add_gateway_mx" in failed.waiting_for
    assert f"add_gateway_mx failed: {refusal}" in status.alerts
    assert [n.event for n in fakes.args("send_notice")] == ["overdue"]
    assert fakes.served(DOMAIN) == ORIGINAL

    assert await world.confirm(handle, "add_gateway_mx", "alice", "key fixed") == "add_gateway_mx confirmed"
    assert (await world.finish(handle)).state == MoveState.DONE
    assert [c.attempt for c in fakes.calls_of("apply_mx")] == [1, 1, 1]  # failed, retried, then the removal
    assert fakes.served(DOMAIN) == FINAL


async def test_retryable_failures_are_retried_without_a_person(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.script("apply_mx", *[fails("Busy", "the primary is busy", retryable=True)] * 2)
    handle = await world.start(DomainMoveWorkflow.run, move())
    assert (await world.finish(handle)).state == MoveState.DONE
    assert [c.attempt for c in fakes.calls_of("apply_mx")] == [1, 2, 3, 1]
    assert fakes.actions(handle.id, "escalated") == []


async def test_a_stage_failing_retryably_past_the_retry_limit_needs_attention(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.always("apply_mx", fails("Busy", "the primary is busy", retryable=True))
    handle = await world.start(DomainMoveWorkflow.run, move(retry_limit=60, dns_timeout=10))
    await world.skip(timedelta(minutes=3))
    status = await world.until(handle, "add_gateway_mx", where=lambda s: s.attention)
    assert stage_of(status, "add_gateway_mx").last_error == "Busy: the primary is busy"
    assert len(fakes.args("apply_mx")) > 3  # retried within the limit first

    del fakes.defaults["apply_mx"]
    await world.confirm(handle, "add_gateway_mx")
    assert (await world.finish(handle)).state == MoveState.DONE


@pytest.mark.parametrize(
    ("arrange", "why"),
    [
        (
            lambda f, m: f.always(
                "check_domain", returns(with_error("domain", DOMAIN, "SPF lacks the gateway", "add it"))
            ),
            "preflight: SPF lacks the gateway: add it",
        ),
        (lambda f, m: f.mx.update({DOMAIN: list(FINAL)}), f"preflight: {DOMAIN} is already behind the gateway"),
        (lambda f, m: m.gateway_mx.append(LEGACY), "preflight: the legacy MX is one of the gateway hosts"),
        (
            lambda f, m: f.script("inspect_zone", fails("NoZone", f"{DOMAIN} has no SOA")),
            f"preflight: NoZone: {DOMAIN} has no SOA",
        ),
    ],
    ids=["check-error", "already-moved", "legacy-is-gateway", "no-zone"],
)
async def test_preflight_refuses_a_move_that_cannot_work(world: FakeWorld, arrange, why: str) -> None:
    args = move()
    arrange(world.fakes, args)
    before = world.fakes.served(DOMAIN)
    handle = await world.start(DomainMoveWorkflow.run, args)
    with pytest.raises(WorkflowFailureError) as failed:
        await world.finish(handle)
    assert str(failed.value.cause) == why
    status = await world.status(handle)
    assert (status.state, stage_of(status, "preflight").state) == (MoveState.FAILED, StageState.FAILED)
    assert stage_of(status, "preflight").last_error == why
    assert world.fakes.args("apply_mx") == [] and world.fakes.served(DOMAIN) == before


async def test_centre_mode_shows_the_lines_to_set_and_waits_for_them(world: FakeWorld) -> None:
    fakes = world.fakes
    handle = await world.start(DomainMoveWorkflow.run, move("manual", "centre", centre_poll=300))
    status = await world.until(handle, "add_gateway_mx")
    ttl = fakes.ttl
    assert status.records_to_set == [
        f"delete: {DOMAIN}. {ttl} IN MX 10 {LEGACY}.",
        f"add: {DOMAIN}. {ttl} IN MX 5 {LEGACY}.",
        *(f"add: {DOMAIN}. {ttl} IN MX 10 {h}." for h in GATEWAY),
    ]
    assert fakes.args("apply_mx") == []  # a person changes the zone

    fakes.mx[DOMAIN] = list(WITH_LEGACY)
    await world.skip(timedelta(minutes=6))
    status = await world.until(handle, "request_domain")
    assert status.records_to_set == []

    await world.cancel(handle)  # the way back is a person's too
    await world.until(handle, "request_domain", "failed", where=lambda s: bool(s.records_to_set))
    status = await world.status(handle)
    assert status.state == MoveState.CANCELLING
    assert f"add: {DOMAIN}. {ttl} IN MX 10 {LEGACY}." in status.records_to_set
    fakes.mx[DOMAIN] = list(ORIGINAL)
    await world.skip(timedelta(minutes=6))
    assert (await world.finish(handle)).state == MoveState.CANCELLED


async def test_a_lagging_server_keeps_the_stage_waiting_then_escalates(world: FakeWorld) -> None:
    fakes = world.fakes
    lagging = ConvergenceReport(False, [ServerView("192.0.2.54:53", False, list(ORIGINAL), 1)])
    fakes.always("poll_authoritative", returns(lagging))
    handle = await world.start(
        DomainMoveWorkflow.run, move("manual", convergence_escalate_after=600, convergence_pause=60)
    )
    status = await world.until(handle, "add_gateway_mx")
    assert stage_of(status, "add_gateway_mx").waiting_for == (
        f"authoritative servers to serve the new set: 192.0.2.54:53 (10 {LEGACY}.)"
    )
    await world.skip(timedelta(minutes=11))
    status = await world.status(handle)
    assert status.attention and "add_gateway_mx: authoritative servers still disagree after 600s" in status.alerts

    del fakes.defaults["poll_authoritative"]
    await world.skip(timedelta(minutes=2))
    await world.until(handle, "request_domain")


async def waiting_on_a_refused_address(world: FakeWorld) -> tuple[WorkflowHandle, list[str]]:
    """A move registered by the portal, waiting because the gateway refuses one of its two listed addresses."""
    world.fakes.registered = "portal"
    world.fakes.refused = {"lab@chem.test"}
    listed = ["lab@chem.test", "info@chem.test"]
    handle = await world.start(DomainMoveWorkflow.run, replace(move(probe_interval=HOUR), addresses=listed))
    await world.until(handle, "await_registration", where=lambda s: "refuses 1" in s.stages[3].waiting_for)
    return handle, listed


async def test_refused_listed_addresses_wait_and_a_confirm_checks_them_again(world: FakeWorld) -> None:
    fakes = world.fakes
    handle, listed = await waiting_on_a_refused_address(world)
    assert fakes.args("file_whitelist")[0].addresses == listed
    assert fakes.served(DOMAIN) == WITH_LEGACY  # not without every listed address accepted

    answer = await world.confirm(handle, "await_registration")
    assert answer.startswith("await_registration: checked again: the gateway refuses 1 listed address(es)")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await world.confirm(handle, "await_registration", lost=["nobody@chem.test"])
    assert "not listed for this domain: nobody@chem.test" in str(refused.value.cause)

    fakes.refused.clear()  # filed on the Whitelist meanwhile
    answer = await world.confirm(handle, "await_registration")
    assert answer == "await_registration: checked again: a.mx.gw.test accepts all 2 listed addresses; the move goes on"
    assert (await world.finish(handle)).state == MoveState.DONE
    assert {a.address: a.state for a in (await world.status(handle)).addresses} == dict.fromkeys(listed, "accepted")


async def test_refused_addresses_accepted_as_lost(world: FakeWorld) -> None:
    handle, _ = await waiting_on_a_refused_address(world)
    await world.confirm(handle, "await_registration", "alice", "gone", lost=["lab@chem.test"])
    assert (await world.finish(handle)).state == MoveState.DONE
    status = await world.status(handle)
    assert {a.address: a.state for a in status.addresses} == {"lab@chem.test": "lost", "info@chem.test": "accepted"}
    assert stage_of(status, "await_registration").detail.endswith("accepted as lost by alice: lab@chem.test")


async def test_a_mail_on_its_way_holds_neither_a_confirm_nor_the_end(world: FakeWorld) -> None:
    """A relay that is slow or down delays its mail, not the move ("notify-apart"); the move
    ends only once its mails have (a workflow that ends leaves its activities)."""
    fakes = world.fakes
    first, last = Gate(), Gate()
    fakes.script("send_notice", first, normally, last)  # waiting, waiting, done
    handle = await world.start(DomainMoveWorkflow.run, move("manual"))
    await first.reached()
    assert await world.confirm(handle, "request_domain", "alice", "ticket 42") == "request_domain confirmed"
    await world.until(handle, "await_registration", idle=False)  # the first mail still held
    first.release()  # (the test server's clock stands while an activity runs)
    await world.confirm(handle, "await_registration", "bob", "HRZ mail of 12 May")
    result = asyncio.create_task(world.finish(handle))  # waiting for it skips time (the old TTL)
    await last.reached()
    await world.until(handle, "done", "done", idle=False)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING and not result.done()
    last.release()
    assert (await result).state == MoveState.DONE
    assert [n.event for n in fakes.args("send_notice")] == ["waiting", "waiting", "done"]
    assert not [a for a in (await world.status(handle)).alerts if "mail" in a]


async def test_a_mail_that_cannot_be_sent_is_an_alert_not_a_failure(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.always("send_notice", fails("Smtp", "the relay refused"))
    handle = await world.start(DomainMoveWorkflow.run, move())
    assert (await world.finish(handle)).state == MoveState.DONE
    alerts = (await world.status(handle)).alerts
    assert f"the waiting mail to postmaster@{DOMAIN} was not sent: Smtp: the relay refused" in alerts
    assert f"the done mail to postmaster@{DOMAIN} was not sent: Smtp: the relay refused" in alerts
