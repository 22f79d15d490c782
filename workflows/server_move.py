"""ServerMoveWorkflow: a department's mail server is replaced behind the central gateway.

Stages (docs/operations.md): preflight, request_tsl, await_tsl, open_firewall, relay_test,
configure_mta, await_cutover, remove_old_tsl, done. The firewall and the relay test run on the
new server itself, through the host agent's own task queue (`worker.py --host FQDN`); without
an agent they are tasks for a person, with the exact rules and command. `configure_mta` (opt-in)
has the agent set the relay in Postfix's main.cf and send a probe message through it; without
it the stage is skipped and a wrong setting is a warning with the lines to set. Cancel before
`remove_old_tsl` undoes what was done: main.cf's recorded values are restored, the firewall
rules are removed and a filed entry is withdrawn.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.check import CheckActivities
    from activities.dns import DnsActivities
    from activities.firewall import FirewallActivities, render
    from activities.postfix import PostfixActivities
    from activities.relay_test import RelayTestActivities
    from mailmove.base import hints
    from mailmove.base.guard import GuardInput, server_guard
    from mailmove.base.model import (
        FirewallChange,
        FirewallPlan,
        MoveResult,
        MtaProbe,
        MtaProbeResult,
        PostfixChange,
        PostfixCheck,
        RelayTestQuery,
        RelayTranscript,
        ServerIdentity,
        ServerMoveInput,
        ServerQuery,
    )
    from mailmove.base.mta import other_mta_lines
    from mailmove.base.postfix import postfix_lines, shown
    from mailmove.base.report import ServerCheckQuery
    from mailmove.base.vocabulary import (
        SERVER_STAGES,
        Action,
        Kind,
        MoveState,
        PortalMode,
        RelayScope,
        Request,
        Stage,
        StageState,
        Verdict,
    )
    from mailmove.checks.relay import RETRYABLE
    from workflows import policy
    from workflows.migration import Migration, error_text, findings

# the list each relay scope needs an entry on (`internal` needs none)
LISTS = {RelayScope.EXTERNAL: Request.TSL, RelayScope.UNSECURE: Request.UNSECURE, RelayScope.INTERNAL: ""}
LIST_NAMES = {Request.TSL: "TrustedServerList", Request.UNSECURE: "MailOut-Unsecure list"}
REMOVALS = {Request.TSL: Request.TSL_REMOVAL, Request.UNSECURE: Request.UNSECURE_REMOVAL}  # what withdraws an entry


def firewall_plan(args: ServerMoveInput) -> FirewallPlan:
    """In from the gateway; out to the relay the server uses (mailout-intern by its addresses)."""
    outbound = {
        RelayScope.EXTERNAL: [*args.gateway_networks, *args.internal_relay_addresses],
        RelayScope.INTERNAL: list(args.internal_relay_addresses),
        RelayScope.UNSECURE: list(args.gateway_networks),
    }[args.relay_scope]
    return FirewallPlan(args.new_fqdn, list(args.gateway_networks), outbound)


@workflow.defn
class ServerMoveWorkflow(Migration):
    KIND = Kind.SERVER
    STAGES = SERVER_STAGES
    NO_RETURN = Stage.REMOVE_OLD_TSL  # from here the old entry is going: the move cannot be undone

    @workflow.init
    def __init__(self, args: ServerMoveInput) -> None:
        self.setup(args.new_fqdn, args.timings, args.portal_mode, args.entry.contact)
        self.args = args
        self.list = LISTS[args.relay_scope]
        self.plan = firewall_plan(args)
        self.rules = render(self.plan)
        self.postfix = postfix_lines(args.relay)
        self.identity: ServerIdentity | None = None
        self.firewall_change: FirewallChange | None = None
        self.postfix_check: PostfixCheck | None = None
        self.transcript: RelayTranscript | None = None
        self.postfix_change: PostfixChange | None = None
        self.mta_probe: MtaProbeResult | None = None
        self.warnings: list[str] = []
        self.entry_filed = False  # the new entry is (or may be) filed: a cancel withdraws it
        self.firewall_opened = False
        self.firewall_by_hand = False  # a cancel then asks a person to close it again
        self.postfix_configured = False  # the agent is (or may be) changing main.cf: a cancel restores it
        self.postfix_by_hand = ""  # why the restore failed: a cancel then asks a person to do it
        self.dns_timeout = policy.seconds(args.timings.dns_timeout)
        self.agent_timeout = policy.seconds(args.timings.agent_timeout)
        self.probe_timeout = 2 * self.agent_timeout  # the agent's own wait (`agent.postfix_probe_wait`) fits
        if args.relay_scope == RelayScope.UNSECURE:
            self.warnings.append(
                f"{args.relay.host} relays without TLS and only to campus addresses: "
                "mail to anyone outside the university will not leave through it"
            )

    @workflow.run
    async def run(self, args: ServerMoveInput) -> MoveResult:
        return await self.drive(
            [
                self.preflight,
                self.request_entry,
                self.await_entry,
                self.open_firewall,
                self.relay_test,
                self.configure_mta,
                self.await_cutover,
                self.remove_old_entry,
                self.finish,
            ]
        )

    # -- stages -----------------------------------------------------------------------------

    async def preflight(self) -> None:
        a = self.args
        await self.begin(Stage.PREFLIGHT)
        query = ServerQuery(a.new_fqdn, a.new_ipv4, a.new_ipv6, a.entry.sender_domains, a.old_fqdn)
        try:
            self.identity = await self.act(DnsActivities.server_identity, query, self.dns_timeout)
        except ActivityError as err:
            raise ApplicationError(f"preflight: {error_text(err)}", non_retryable=True) from err
        problems = list(self.identity.problems)
        if self.list:
            problems += [f"{field}: {fix}" for field, fix in a.entry.problems()]
        report = await self.check(Stage.PREFLIGHT, CheckActivities.check_server, self.check_query())
        if report:  # the identity problems above have said what the DNS checks find
            problems += [findings([c]) for c in report.errors if c.group != "DNS"]
        if problems:
            raise ApplicationError("preflight: " + "; ".join(problems), non_retryable=True)
        checked = ", ".join(f"{c.address} ↔ {a.new_fqdn}" for c in self.identity.reverse)
        detail = f"forward and reverse DNS match ({checked}); sender domains resolve"
        if report and report.with_verdict(Verdict.WARNING):
            detail += "; warnings: " + findings(report.with_verdict(Verdict.WARNING))
        await self.end(Stage.PREFLIGHT, detail=detail)

    def check_query(self) -> ServerCheckQuery:
        a = self.args
        return ServerCheckQuery(a.new_fqdn, [x for x in (a.new_ipv4, a.new_ipv6) if x], self.transcript)

    def unchanged(self) -> bool:
        """Same name and address as the old server: its entry stays valid (the centre's rule)."""
        return self.args.old_fqdn == self.args.new_fqdn and self.args.new_ipv4 in self.identity.old_addresses

    def entry_values(self, request: str, fqdn: str, addresses: list[str]) -> dict[str, str]:
        """The form's values; `request` is "new entry" or "remove entry"."""
        e = self.args.entry
        values = {
            "request": request,
            "institution": e.institution,
            "admins": ", ".join(e.admins),
            "contact": e.contact,
            "sender_domains": ", ".join(e.sender_domains),
            "fqdn": fqdn,
            "ipv4": ", ".join(a for a in addresses if ":" not in a),
        }
        if v6 := ", ".join(a for a in addresses if ":" in a):
            values["ipv6"] = v6
        return values

    def form_url(self) -> str:
        return self.args.tsl_form if self.list == Request.TSL else self.args.unsecure_form

    def skip_reason(self) -> str:
        if not self.list:
            return f"the internal relay {self.args.relay.host} needs no list entry (campus addresses only)"
        if self.unchanged():
            return f"name and address are unchanged: the {LIST_NAMES[self.list]} entry stays"
        return ""

    async def request_entry(self) -> None:
        stage = Stage.REQUEST_TSL
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        a = self.args
        self.entry_filed = self.portal_mode == PortalMode.HTTP  # filed as soon as the request leaves
        how = await self.file(
            stage, self.list, a.new_fqdn, self.entry_values("new entry", a.new_fqdn, [a.new_ipv4]), self.form_url()
        )
        self.entry_filed = True
        await self.end(stage, detail=f"{LIST_NAMES[self.list]}: {how}")

    async def await_entry(self) -> None:
        stage = Stage.AWAIT_TSL
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        receipt = self.receipts.get(self.list)
        how = await self.wait_person(
            stage,
            f"the centre's confirmation that {self.args.new_fqdn} is on the {LIST_NAMES[self.list]} "
            f"(`{hints.confirm(workflow.info().workflow_id, stage)}`)"
            + (f", or the portal confirming request {receipt.reference}" if receipt else ""),
            detect=self.detect_entry if receipt else None,
            overdue="no list entry",
        )
        self.detection.stop()
        await self.end(stage, detail=how)

    async def detect_entry(self) -> str:
        """The portal's status; a confirm does not wait for it. Moves begun before "detect-apart"
        asked it as an activity of the wait itself."""
        if workflow.patched("detect-apart"):
            return await self.detect_round(Stage.AWAIT_TSL, [self.portal_source(self.receipts[self.list])])
        try:
            return await self.portal_confirmed(self.list)
        except ActivityError as err:
            self.stages[Stage.AWAIT_TSL].last_error = error_text(err)
            return ""

    async def open_firewall(self) -> None:
        stage = Stage.OPEN_FIREWALL
        await self.begin(stage)
        if not self.args.agent_queue:
            await self.wait_confirm(
                stage,
                f"open tcp/25 on {self.args.new_fqdn} with the rules shown (nftables, iptables or ufw), "
                f"then `{hints.confirm(workflow.info().workflow_id, stage)}`",
            )
            self.firewall_by_hand = True
            await self.end(stage, detail="opened by hand: " + self.confirmed[stage].note)
            return
        self.firewall_opened = True
        self.firewall_change = await self.attempt(
            stage,
            lambda: self.act(
                FirewallActivities.open_firewall, self.plan, self.agent_timeout, task_queue=self.args.agent_queue
            ),
        )
        change = self.firewall_change
        await self.end(stage, detail=change.detail + (": " + ", ".join(change.added) if change.added else ""))

    async def relay_test(self) -> None:
        """On the new server: repeated with backoff until the relay accepts (the TSL entry works)
        or the stage's limit is reached; a cause that needs a person needs attention at once."""
        stage = Stage.RELAY_TEST
        a = self.args
        status = self.stages[stage]
        await self.begin(stage)
        query = RelayTestQuery(a.relay, a.new_fqdn, a.mail_from, a.rcpt, a.new_ipv4, a.send)
        if not a.agent_queue:
            await self.wait_confirm(stage, f"run on {a.new_fqdn}: `{hints.relay_test(query)}`; confirm when it passes")
            await self.end(stage, detail="passed by hand: " + self.confirmed[stage].note)
            return
        await self.check_postfix()
        t = self.timings
        started, delay = workflow.now(), t.relay_retry_initial
        while True:
            query = replace(query, probe_id=str(workflow.uuid4()))
            self.transcript = await self.attempt(
                stage,
                lambda q=query: self.act(
                    RelayTestActivities.relay_test, q, self.agent_timeout, task_queue=a.agent_queue
                ),
            )
            if self.transcript.passed:
                break
            status.attempts += 1
            status.last_error = self.transcript.cause
            over = workflow.now() - started >= timedelta(seconds=t.relay_test_limit)
            if self.transcript.verdict not in RETRYABLE or over:
                await self.needs_retry(stage, self.transcript.cause)
                started, delay = workflow.now(), t.relay_retry_initial
                continue
            status.waiting_for = (
                f"the relay to accept ({self.transcript.verdict}); next test at "
                f"{(workflow.now() + timedelta(seconds=delay)).isoformat()}"
            )
            if status.state != StageState.WAITING:
                status.state = StageState.WAITING
                await self.transition(
                    MoveState.WAITING, Action.WAITING, detail=f"{status.waiting_for}: {status.last_error}"
                )
            await self.pause(delay)
            delay = min(delay * 2, t.relay_retry_max)
        status.state = StageState.RUNNING
        status.last_error = ""
        await self.end(stage, detail=self.transcript.cause)

    async def check_postfix(self) -> None:
        """A wrong MTA setting is a warning with the lines to set; the test goes on regardless."""
        try:
            self.postfix_check = await self.act(
                PostfixActivities.check_postfix, self.args.relay, self.agent_timeout, task_queue=self.args.agent_queue
            )
        except ActivityError as err:
            self.warnings.append(f"Postfix was not checked: {error_text(err)}")
            return
        check = self.postfix_check
        if check.note:
            self.warnings.append(check.note)
        elif check.mismatches and not self.args.configure_mta:  # else configure_mta sets them
            warning = (
                f"Postfix on {self.args.new_fqdn} does not use {self.args.relay.host} as required; set in main.cf: "
            )
            self.warnings.append(warning + "; ".join(check.mismatches))
            await self.transition(self.state, Action.WARNING, detail=self.warnings[-1])

    async def configure_mta(self) -> None:
        """With `configure_mta`: the agent sets the relay lines in main.cf (recording what was
        there first), then a probe message goes through the local Postfix to the relay. A failure
        of either needs attention; a retry does both again (the change is idempotent)."""
        stage = Stage.CONFIGURE_MTA
        status = self.stages[stage]
        if not workflow.patched("configure-mta"):  # a move begun before the stage: none in its history
            status.state, status.detail = StageState.SKIPPED, "not a stage when this move began"
            return
        a = self.args
        if not a.configure_mta:
            await self.skip(stage, f"not asked for (--configure-mta): main.cf is set by hand ({shown(self.postfix)})")
            return
        await self.begin(stage)
        self.postfix_configured = True

        async def configure_and_probe() -> MtaProbeResult:
            self.postfix_change = await self.act(
                PostfixActivities.configure_postfix, a.relay, self.agent_timeout, task_queue=a.agent_queue
            )
            change = self.postfix_change
            await self.transition(
                self.state, Action.CHANGED, detail=f"{change.detail}; main.cf before: {shown(change.previous)}"
            )
            probe = MtaProbe(a.mail_from, a.rcpt, str(workflow.uuid4()))
            return await self.act(PostfixActivities.probe_postfix, probe, self.probe_timeout, task_queue=a.agent_queue)

        self.mta_probe = await self.attempt(stage, configure_and_probe)
        p = self.mta_probe
        await self.end(
            stage,
            detail=f"{self.postfix_change.detail}; probe message {p.message_id} (queue id {p.queue_id}) "
            f"relayed by {p.relay}: {p.answer}",
        )

    async def await_cutover(self) -> None:
        stage = Stage.AWAIT_CUTOVER
        await self.begin(stage)
        a = self.args
        how = await self.wait_person(
            stage,
            f"the switch of mail service from {a.old_fqdn} to {a.new_fqdn}: confirm when the old server "
            f"sends no more mail (`{hints.confirm(workflow.info().workflow_id, stage)}`)",
            overdue="no cut-over",
        )
        await self.end(stage, detail=how)

    async def remove_old_entry(self) -> None:
        stage = Stage.REMOVE_OLD_TSL
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        a = self.args
        values = self.entry_values("remove entry", a.old_fqdn, self.identity.old_addresses)
        how = await self.file(stage, REMOVALS[self.list], a.old_fqdn, values, self.form_url())
        await self.end(stage, detail=f"removal of {a.old_fqdn}: {how}")

    async def finish(self) -> None:
        await self.begin(Stage.DONE)
        a = self.args
        self.message = f"{a.new_fqdn} sends through {a.relay.host}" + (
            f"; the old server {a.old_fqdn} is off the {LIST_NAMES[self.list]}" if not self.skip_reason() else ""
        )
        await self.complete(CheckActivities.check_server, self.check_query())

    def guard_input(self) -> GuardInput:
        return server_guard(workflow.info().workflow_id, self.args)

    # -- cancel -----------------------------------------------------------------------------

    def undo_plan(self) -> list[str]:
        steps = []
        if self.postfix_configured and not self.postfix_by_hand:
            steps.append(f"restore Postfix's relay lines on {self.args.new_fqdn}")
        if self.firewall_opened:
            steps.append(f"remove the firewall rules on {self.args.new_fqdn}")
        if self.entry_filed:
            steps.append(f"withdraw the {LIST_NAMES[self.list]} entry of {self.args.new_fqdn}")
        return steps

    def cancel_outcome(self) -> str:
        steps = self.undo_plan()
        outcome = "cancelling: " + "; ".join(steps) if steps else "cancelled; nothing had been changed"
        return outcome + self.left_by_hand()

    def left_by_hand(self) -> str:
        steps = []
        if self.postfix_by_hand:
            before = shown(self.postfix_change.previous) if self.postfix_change else "the values before the move"
            steps.append(f"set main.cf on {self.args.new_fqdn} back to {before} ({self.postfix_by_hand})")
        if self.firewall_by_hand:
            steps.append(f"remove the tcp/25 rules opened on {self.args.new_fqdn}")
        return "; left to do by hand: " + "; ".join(steps) if steps else ""

    def past_return(self) -> str:
        return f"the old entry is already being removed ({self.stage}); a cancel would not bring it back"

    async def compensate(self) -> None:
        """Undo in reverse order: main.cf's relay lines, the firewall rules, then the filed entry
        (withdrawn by a request). A restore that Postfix refuses is left to a person, with the values."""
        actor = await self.mark_cancelled()
        a = self.args
        if self.postfix_configured:
            await self.restore_postfix()
        done = self.undo_plan()  # a restore left to a person is not among them
        if self.firewall_opened:
            self.firewall_change = await self.act(
                FirewallActivities.close_firewall, self.plan, self.agent_timeout, task_queue=a.agent_queue
            )
        if self.entry_filed:
            values = self.entry_values("remove entry", a.new_fqdn, [a.new_ipv4])
            how = await self.file(Stage.REQUEST_TSL, REMOVALS[self.list], a.new_fqdn, values, self.form_url())
            withdrawn = self.stages[Stage.REQUEST_TSL]
            withdrawn.state, withdrawn.waiting_for, withdrawn.detail = StageState.DONE, "", f"withdrawn: {how}"
        self.message = "cancelled; " + ("; ".join(done) + ": done" if done else "nothing had been changed")
        self.message += self.left_by_hand()
        await self.transition(MoveState.CANCELLED, Action.CANCELLED, actor=actor, detail=self.message)

    async def restore_postfix(self) -> None:
        a = self.args
        stage = self.stages[Stage.CONFIGURE_MTA]
        try:
            self.postfix_change = await self.act(
                PostfixActivities.restore_postfix, a.relay, self.agent_timeout, task_queue=a.agent_queue
            )
        except ActivityError as err:  # only a non-retryable one: Postfix refused the old values
            self.postfix_by_hand = error_text(err)
            stage.detail = f"not undone: {self.postfix_by_hand}"
            return
        stage.detail = f"undone: {self.postfix_change.detail}"
        await self.transition(self.state, Action.CHANGED, detail=stage.detail)

    def details(self) -> dict[str, Any]:
        return {
            "eta": self.stages[self.stage].eta,
            "identity": self.identity,
            "firewall": self.rules,
            "firewall_change": self.firewall_change,
            "postfix": [f"{k} = {v}" for k, v in self.postfix.items()],
            "other_mtas": other_mta_lines(self.args.relay),
            "postfix_check": self.postfix_check,
            "transcript": self.transcript,
            "postfix_change": self.postfix_change,
            "mta_probe": self.mta_probe,
            "warnings": list(self.warnings),
        }
