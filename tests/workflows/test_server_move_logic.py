"""ServerMoveWorkflow's logic on the time-skipping server with fake activities
(tests/support/fake_activities.py), no real server, no host agent: every stage in order
through the portal and the agent's queue, or by a person's confirms; the list each relay
scope needs; a cancel at each stage and what it undoes; the relay test's retries; Postfix's
relay set by the agent (opt-in), its failures and its undoing; reminders and escalation of the
cut-over; the refusals of preflight."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from mailmove.base.model import (
    MoveState,
    MoveStatus,
    PostfixCheck,
    Relay,
    RelayTranscript,
    ServerIdentity,
    ServerMoveInput,
    StageState,
    StageStatus,
    Timings,
    TslEntry,
)
from mailmove.base.vocabulary import SERVER_STAGES
from tests.support.fake_activities import Gate, fails, normally, returns
from tests.support.fake_world import FakeWorld, keep_history
from workflows.server_move import ServerMoveWorkflow

pytestmark = pytest.mark.temporal

OLD, NEW, NEW_IPV4, OLD_IPV4 = "mail.chem.test", "mx2.chem.test", "192.0.2.20", "192.0.2.10"
RELAYS = {
    "external": Relay("mailout.gw.test", 25, True),
    "internal": Relay("mailout-intern.gw.test", 25, True),
    "unsecure": Relay("mailout-unsecure.gw.test", 25, False),
}
HOUR, DAY = 3600, 86400


def server_move(
    world: FakeWorld,
    portal_mode: str = "http",
    agent: bool = True,
    scope: str = "external",
    configure_mta: bool = False,
    **timings: float,
) -> ServerMoveInput:
    return ServerMoveInput(
        OLD,
        NEW,
        NEW_IPV4,
        "",
        scope,
        RELAYS[scope],
        TslEntry("Department of Chemistry", ["ab12cdef", "xy34ghij"], "postmaster@chem.test", ["chem.test"]),
        "postmaster@chem.test",
        "someone@example.org",
        ["198.51.100.0/27"],
        ["198.51.100.40"],
        agent_queue=world.agent_queue if agent else "",
        configure_mta=configure_mta,
        portal_mode=portal_mode,
        tsl_form="https://portal.test/tsl",
        unsecure_form="https://portal.test/unsecure",
        timings=Timings(**timings),
    )


def transcript(verdict: str, cause: str) -> RelayTranscript:
    return RelayTranscript(str(RELAYS["external"]), NEW_IPV4, verdict, cause, [])


def stage_of(status: MoveStatus, name: str) -> StageStatus:
    return next(s for s in status.stages if s.name == name)


def filed(world: FakeWorld) -> list[tuple[str, str, str]]:
    return [(f.kind, f.subject, f.values.get("ipv4", "")) for f in world.fakes.filings.values()]


async def test_every_stage_through_the_portal_and_the_agent(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, configure_mta=True))
    status = await world.until(handle, "await_cutover")
    assert status.transcript.passed and fakes.open_on == {NEW}
    agent = ["open_firewall", "check_postfix", "relay_test", "configure_postfix", "probe_postfix"]
    agent_calls = [c for c in fakes.calls if c.name in agent]
    assert [c.name for c in agent_calls] == agent
    assert {c.task_queue for c in agent_calls} == {world.agent_queue}  # on the new server itself
    assert fakes.main_cf["relayhost"] == "[mailout.gw.test]"
    assert fakes.args("open_firewall")[0].inbound == ["198.51.100.0/27"]
    assert stage_of(status, "await_tsl").detail == "the portal confirmed request REQ-1"

    await world.confirm(handle, "await_cutover", "bob", "old MTA stopped")
    result = await world.finish(handle)
    assert result.state == MoveState.DONE
    assert result.message.startswith(f"{NEW} sends through mailout.gw.test; the old server {OLD} is off the ")
    assert fakes.actions(handle.id, "stage started") == [("stage started", s) for s in SERVER_STAGES]
    status = await world.status(handle)
    assert [s.state for s in status.stages] == [StageState.DONE] * len(SERVER_STAGES)
    assert filed(world) == [("tsl", NEW, NEW_IPV4), ("tsl-removal", OLD, OLD_IPV4)]
    assert [q.relay_test is None for q in fakes.args("check_server")] == [True, False]  # done sees the test
    await keep_history(handle, "server-move")


async def test_a_person_does_every_step_without_portal_or_agent(world: FakeWorld) -> None:
    fakes = world.fakes
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, "manual", agent=False))
    for stage in [s for s in SERVER_STAGES[1:-1] if s != "configure_mta"]:
        status = await world.until(handle, stage)
        waiting = stage_of(status, stage).waiting_for
        assert f"mailmove confirm {handle.id} {stage}" in waiting or stage == "relay_test"
        if stage == "request_tsl":
            assert status.form["fqdn"] == NEW and status.form["form"] == "https://portal.test/tsl"
        if stage == "relay_test":
            assert f"mailmove relay-test --relay mailout.gw.test:25 --helo {NEW}" in waiting
        await world.confirm(handle, stage, "alice", f"{stage} by hand")
    assert (await world.finish(handle)).state == MoveState.DONE
    status = await world.status(handle)
    assert stage_of(status, "open_firewall").detail == "opened by hand: open_firewall by hand"
    assert stage_of(status, "relay_test").detail == "passed by hand: relay_test by hand"
    assert stage_of(status, "configure_mta").state == StageState.SKIPPED
    assert fakes.filings == {} and fakes.open_on == set()
    assert not [c for c in fakes.calls if c.task_queue == world.agent_queue]


@pytest.mark.parametrize(
    ("scope", "old_addresses", "lists", "skipped"),
    [
        ("unsecure", [OLD_IPV4], ["unsecure", "unsecure-removal"], ""),
        (
            "internal",
            [OLD_IPV4],
            [],
            "the internal relay mailout-intern.gw.test needs no list entry (campus addresses only)",
        ),
        ("external", [NEW_IPV4], [], "name and address are unchanged: the TrustedServerList entry stays"),
    ],
    ids=["unsecure", "internal", "unchanged"],
)
async def test_the_list_a_relay_scope_needs(
    world: FakeWorld, scope: str, old_addresses: list[str], lists: list[str], skipped: str
) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.old_addresses = old_addresses
    args = server_move(world, scope=scope)
    if old_addresses == [NEW_IPV4]:
        args.old_fqdn = NEW
    handle = await world.start(ServerMoveWorkflow.run, args)
    await world.until(handle, "await_cutover")
    await world.confirm(handle, "await_cutover")
    assert (await world.finish(handle)).state == MoveState.DONE
    status = await world.status(handle)
    assert [f.kind for f in fakes.filings.values()] == lists
    for stage in ("request_tsl", "await_tsl", "remove_old_tsl"):
        listed = stage_of(status, stage)
        assert (
            (listed.state, listed.detail) == (StageState.SKIPPED, skipped)
            if skipped
            else listed.state == StageState.DONE
        )
    assert fakes.args("relay_test")[0].relay == RELAYS[scope]
    assert any("relays without TLS" in w for w in status.warnings) == (scope == "unsecure")


# stage -> (the activity held there, how many of its attempts before pass), or None: a person's wait
REACH = {
    "preflight": ("server_identity", 0),
    "request_tsl": ("file_request", 0),
    "await_tsl": None,
    "open_firewall": ("open_firewall", 0),
    "relay_test": ("relay_test", 0),
    "configure_mta": ("probe_postfix", 0),
    "await_cutover": None,
}


@pytest.mark.parametrize("stage", list(REACH))
async def test_a_cancel_at_each_stage_undoes_what_was_done(world: FakeWorld, stage: str) -> None:
    fakes = world.fakes
    fakes.registered = "" if stage == "await_tsl" else "portal"
    gate = Gate()
    if REACH[stage]:
        name, before = REACH[stage]
        fakes.script(name, *[normally] * before, gate)
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, configure_mta=True))
    if REACH[stage]:
        await gate.reached()
    else:
        await world.until(handle, stage)

    at = SERVER_STAGES.index(stage)
    postfix = at >= SERVER_STAGES.index("configure_mta")
    firewall = at >= SERVER_STAGES.index("open_firewall")
    entry = at >= SERVER_STAGES.index("request_tsl")
    undo = (
        [f"restore Postfix's relay lines on {NEW}"] * postfix
        + [f"remove the firewall rules on {NEW}"] * firewall
        + [f"withdraw the TrustedServerList entry of {NEW}"] * entry
    )
    answer = await world.cancel(handle)
    assert answer == ("cancelling: " + "; ".join(undo) if undo else "cancelled; nothing had been changed")
    result = await world.finish(handle)
    assert result.state == MoveState.CANCELLED
    assert result.message == "cancelled; " + ("; ".join(undo) + ": done" if undo else "nothing had been changed")

    assert fakes.open_on == set()
    assert [c.task_queue for c in fakes.calls_of("close_firewall")] == [world.agent_queue] * firewall
    assert [c.task_queue for c in fakes.calls_of("restore_postfix")] == [world.agent_queue] * postfix
    assert fakes.main_cf == {"relayhost": "[smtp.old.test]"} and fakes.main_cf_before is None
    undone = [c.name for c in fakes.calls if c.name in ("restore_postfix", "close_firewall", "file_request")][-3:]
    if postfix:  # in reverse order
        assert undone == ["restore_postfix", "close_firewall", "file_request"]
    withdrawn = [(k, s) for k, s, _ in filed(world) if k == "tsl-removal"]
    assert withdrawn == [("tsl-removal", NEW)] * entry
    status = await world.status(handle)
    assert status.state == MoveState.CANCELLED
    if entry:
        assert stage_of(status, "request_tsl").detail.startswith("withdrawn: filed at the portal as ")
    if stage == "configure_mta":
        assert (stage_of(status, stage).state, stage_of(status, stage).detail) == (
            StageState.FAILED,
            "undone: restored relayhost = [smtp.old.test]; smtp_tls_security_level (not set); "
            "smtp_tls_mandatory_protocols (not set)",
        )
    elif stage != "request_tsl":
        assert (stage_of(status, stage).state, stage_of(status, stage).detail) == (
            StageState.FAILED,
            "cancelled by carol",
        )
    assert all(s.state == StageState.SKIPPED for s in status.stages[at + 1 :])
    assert gate.cancelled == bool(REACH[stage])


@pytest.mark.parametrize(
    ("stage", "held", "before"), [("remove_old_tsl", "file_request", 1), ("done", "check_server", 1)]
)
async def test_no_cancel_once_the_old_entry_goes(world: FakeWorld, stage: str, held: str, before: int) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    gate = Gate()
    fakes.script(held, *[normally] * before, gate)
    handle = await world.start(ServerMoveWorkflow.run, server_move(world))
    await world.until(handle, "await_cutover")
    await world.confirm(handle, "await_cutover")
    await gate.reached()
    assert (await world.status(handle)).stage == stage
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await world.cancel(handle)
    assert "a cancel would not bring it back" in str(refused.value.cause)
    gate.release()
    assert (await world.finish(handle)).state == MoveState.DONE
    assert fakes.open_on == {NEW}


async def test_a_cancel_leaves_a_firewall_opened_by_hand_to_a_person(world: FakeWorld) -> None:
    world.fakes.registered = "portal"
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, agent=False))
    await world.until(handle, "open_firewall")
    await world.confirm(handle, "open_firewall", "alice", "nft rules added")
    await world.until(handle, "relay_test")
    answer = await world.cancel(handle)
    assert answer.endswith(f"; left to do by hand: remove the tcp/25 rules opened on {NEW}")
    result = await world.finish(handle)
    assert result.message == (
        f"cancelled; withdraw the TrustedServerList entry of {NEW}: done; "
        f"left to do by hand: remove the tcp/25 rules opened on {NEW}"
    )
    assert world.fakes.calls_of("close_firewall") == []


async def test_the_relay_test_repeats_with_backoff_until_the_entry_works(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    denied = transcript("relay_denied", "the relay denies relaying: not on the TrustedServerList yet")
    fakes.script("relay_test", returns(denied), returns(denied))
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, relay_retry_initial=60, relay_retry_max=600))
    status = await world.until(handle, "relay_test")
    assert (status.state, status.attention) == (MoveState.WAITING, False)
    assert stage_of(status, "relay_test").waiting_for.startswith("the relay to accept (relay_denied); next test at ")

    await world.skip(timedelta(minutes=4))  # 60 s, then 120 s
    status = await world.until(handle, "await_cutover")
    tested = stage_of(status, "relay_test")
    assert (tested.attempts, tested.last_error, tested.detail) == (2, "", "the relay accepted the test")
    probes = fakes.args("relay_test")
    assert len(probes) == 3 and len({p.probe_id for p in probes}) == 3  # each test a probe of its own
    started = [t.at for t in fakes.transitions(handle.id) if t.stage == "relay_test"]
    assert started[-1] - started[0] >= timedelta(seconds=180)
    await world.confirm(handle, "await_cutover")
    assert (await world.finish(handle)).state == MoveState.DONE


@pytest.mark.parametrize("cause", ["not retryable", "past the limit"])
async def test_a_relay_test_that_needs_a_person_is_retried_on_confirm(world: FakeWorld, cause: str) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    if cause == "not retryable":
        refused = transcript("tls_refused", "the relay refused STARTTLS")
        fakes.script("relay_test", returns(refused))
    else:
        refused = transcript("relay_denied", "the relay denies relaying")
        fakes.always("relay_test", returns(refused))
    handle = await world.start(
        ServerMoveWorkflow.run, server_move(world, relay_retry_initial=60, relay_retry_max=60, relay_test_limit=600)
    )
    if cause == "past the limit":
        await world.until(handle, "relay_test")
        await world.skip(timedelta(minutes=12))
    status = await world.until(handle, "relay_test", where=lambda s: s.attention)
    assert f"relay_test failed: {refused.cause}" in status.alerts
    assert stage_of(status, "relay_test").last_error == refused.cause

    fakes.defaults.pop("relay_test", None)
    await world.confirm(handle, "relay_test", "alice", "fixed")
    status = await world.until(handle, "await_cutover")
    assert status.transcript.passed and stage_of(status, "relay_test").state == StageState.DONE


@pytest.mark.parametrize(
    ("postfix", "warning"),
    [
        (
            returns(
                PostfixCheck(
                    {"relayhost": "[mailout.gw.test]:25"}, {"relayhost": ""}, ["relayhost = [mailout.gw.test]:25"]
                )
            ),
            f"Postfix on {NEW} does not use mailout.gw.test as required; set in main.cf: relayhost = [mailout.gw.test]:25",
        ),
        (
            fails("NoPostconf", "postconf is not installed"),
            "Postfix was not checked: NoPostconf: postconf is not installed",
        ),
    ],
    ids=["mismatch", "unchecked"],
)
async def test_a_postfix_setting_is_a_warning_not_a_stop(world: FakeWorld, postfix, warning: str) -> None:
    world.fakes.registered = "portal"
    world.fakes.script("check_postfix", postfix)
    handle = await world.start(ServerMoveWorkflow.run, server_move(world))
    status = await world.until(handle, "await_cutover")
    assert status.warnings == [warning] and status.transcript.passed


async def test_without_the_option_postfix_is_left_alone_and_a_cancel_does_not_touch_it(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    handle = await world.start(ServerMoveWorkflow.run, server_move(world))
    status = await world.until(handle, "await_cutover")
    skipped = stage_of(status, "configure_mta")
    assert (skipped.state, skipped.detail) == (
        StageState.SKIPPED,
        "not asked for (--configure-mta): main.cf is set by hand (relayhost = [mailout.gw.test]; "
        "smtp_tls_security_level = encrypt; smtp_tls_mandatory_protocols = >=TLSv1.2)",
    )
    stages = [s for _, s in fakes.actions(handle.id, "stage started", "stage skipped")]
    assert stages == list(SERVER_STAGES[:-2])  # in order, between relay_test and await_cutover
    assert fakes.actions(handle.id, "stage skipped") == [("stage skipped", "configure_mta")]
    assert fakes.calls_of("configure_postfix") == fakes.calls_of("probe_postfix") == []
    assert status.postfix_change is None and status.mta_probe is None

    assert await world.cancel(handle) == (
        f"cancelling: remove the firewall rules on {NEW}; withdraw the TrustedServerList entry of {NEW}"
    )
    assert (await world.finish(handle)).state == MoveState.CANCELLED
    assert fakes.calls_of("restore_postfix") == [] and fakes.main_cf == {"relayhost": "[smtp.old.test]"}


async def test_the_agent_sets_postfix_records_what_was_there_and_sends_a_probe(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    mismatch = PostfixCheck({"relayhost": "[mailout.gw.test]"}, {"relayhost": ""}, ["relayhost = [mailout.gw.test]"])
    fakes.script("check_postfix", returns(mismatch))
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, configure_mta=True))
    status = await world.until(handle, "await_cutover")
    assert status.warnings == []  # the stage sets what the check found wrong
    assert status.postfix_change.previous == {
        "relayhost": "[smtp.old.test]",
        "smtp_tls_security_level": None,
        "smtp_tls_mandatory_protocols": None,
    }
    [probe] = fakes.args("probe_postfix")
    assert (probe.mail_from, probe.rcpt) == ("postmaster@chem.test", "someone@example.org")
    assert status.mta_probe.message_id == f"<{probe.probe_id}@chem.test>"
    configured = stage_of(status, "configure_mta")
    assert configured.state == StageState.DONE
    assert configured.detail.endswith(
        "(queue id 4QX1) relayed by mailout.gw.test[192.0.2.25]:25: 250 2.0.0 Ok: queued as 9A"
    )
    [changed] = [t for t in fakes.transitions(handle.id) if t.action == "changed"]
    assert changed.stage == "configure_mta"
    assert changed.detail.endswith(  # the names in the order the data converter gives them
        "; main.cf before: relayhost = [smtp.old.test]; smtp_tls_mandatory_protocols (not set); "
        "smtp_tls_security_level (not set)"
    )
    await world.confirm(handle, "await_cutover")
    assert (await world.finish(handle)).state == MoveState.DONE
    assert fakes.calls_of("restore_postfix") == [] and fakes.main_cf["relayhost"] == "[mailout.gw.test]"


async def postfix_failing(world: FakeWorld, activity: str, error: str, message: str):
    """A move that changes Postfix, whose fake `activity` fails for good with `error`: its handle,
    and its status once configure_mta needs attention."""
    world.fakes.registered = "portal"
    world.fakes.script(activity, fails(error, message))
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, configure_mta=True))
    return handle, await world.until(handle, "configure_mta", where=lambda s: s.attention)


async def test_a_failed_postfix_change_needs_attention_and_a_retry_does_it_again(world: FakeWorld) -> None:
    fakes = world.fakes
    refused = "postfix check failed: bad value; the previous values are back: relayhost = [smtp.old.test]"
    handle, status = await postfix_failing(world, "configure_postfix", "PostfixFailed", refused)
    assert status.state == MoveState.NEEDS_ATTENTION
    assert f"configure_mta failed: PostfixFailed: {refused}" in status.alerts  # Postfix's own message
    assert stage_of(status, "configure_mta").last_error == f"PostfixFailed: {refused}"
    assert fakes.calls_of("probe_postfix") == []

    await world.confirm(handle, "configure_mta", "alice", "fixed main.cf")
    status = await world.until(handle, "await_cutover")
    assert stage_of(status, "configure_mta").state == StageState.DONE
    assert len(fakes.calls_of("configure_postfix")) == 2 and len(fakes.calls_of("probe_postfix")) == 1


async def test_a_deferred_probe_needs_attention_and_a_cancel_restores_postfix(world: FakeWorld) -> None:
    fakes = world.fakes
    deferred = "the probe message 4QX1 is deferred: 454 4.7.1 Relay access denied"
    handle, status = await postfix_failing(world, "probe_postfix", "ProbeNotRelayed", deferred)
    assert f"configure_mta failed: ProbeNotRelayed: {deferred}" in status.alerts
    assert fakes.main_cf["relayhost"] == "[mailout.gw.test]"

    await world.cancel(handle)
    result = await world.finish(handle)
    assert result.message.startswith(f"cancelled; restore Postfix's relay lines on {NEW}; ")
    assert fakes.main_cf == {"relayhost": "[smtp.old.test]"}
    restored = [t for t in fakes.transitions(handle.id) if t.action == "changed"][-1]
    assert restored.detail.startswith("undone: restored relayhost = [smtp.old.test]")


async def test_a_restore_postfix_refuses_is_left_to_a_person_with_the_values(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    fakes.script("restore_postfix", fails("PostfixFailed", "postfix reload failed: fatal: bad config"))
    handle = await world.start(ServerMoveWorkflow.run, server_move(world, configure_mta=True))
    await world.until(handle, "await_cutover")
    await world.cancel(handle)
    result = await world.finish(handle)
    assert result.state == MoveState.CANCELLED
    assert result.message == (
        f"cancelled; remove the firewall rules on {NEW}; withdraw the TrustedServerList entry of {NEW}: done; "
        f"left to do by hand: set main.cf on {NEW} back to relayhost = [smtp.old.test]; smtp_tls_mandatory_protocols "
        "(not set); smtp_tls_security_level (not set) (PostfixFailed: postfix reload failed: fatal: bad config)"
    )
    status = await world.status(handle)
    assert stage_of(status, "configure_mta").detail == (
        "not undone: PostfixFailed: postfix reload failed: fatal: bad config"
    )


async def test_the_cutover_wait_reminds_and_escalates(world: FakeWorld) -> None:
    fakes = world.fakes
    fakes.registered = "portal"
    handle = await world.start(
        ServerMoveWorkflow.run, server_move(world, reminder_interval=6 * HOUR, escalate_after=DAY)
    )
    await world.until(handle, "await_cutover")
    await world.skip(timedelta(hours=25))
    status = await world.status(handle)
    assert (status.state, status.attention) == (MoveState.NEEDS_ATTENTION, True)
    assert "await_cutover: no cut-over after 1 days" in status.alerts
    assert len(fakes.actions(handle.id, "reminder")) == 4
    assert [n.event for n in fakes.args("send_notice")][-2:] == ["waiting", "overdue"]
    await world.until(handle, "await_cutover")
    await world.confirm(handle, "await_cutover", "bob")
    assert (await world.finish(handle)).state == MoveState.DONE
    assert not (await world.status(handle)).attention


@pytest.mark.parametrize(
    ("arrange", "why"),
    [
        (
            lambda f, m: f.script("server_identity", returns(ServerIdentity([], [], [], [f"{NEW} has no PTR"]))),
            f"preflight: {NEW} has no PTR",
        ),
        (
            lambda f, m: setattr(m.entry, "admins", ["ab12cdef"]),
            "preflight: admin: name at least two admins by their TU-ID (the centre removes orphaned entries)",
        ),
    ],
    ids=["identity", "entry"],
)
async def test_preflight_refuses_a_server_that_cannot_move(world: FakeWorld, arrange, why: str) -> None:
    args = server_move(world)
    arrange(world.fakes, args)
    handle = await world.start(ServerMoveWorkflow.run, args)
    with pytest.raises(WorkflowFailureError) as failed:
        await world.finish(handle)
    assert str(failed.value.cause) == why
    status = await world.status(handle)
    assert (status.state, stage_of(status, "preflight").last_error) == (MoveState.FAILED, why)
    assert world.fakes.filings == {} and world.fakes.open_on == set()
