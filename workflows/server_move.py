"""ServerMoveWorkflow: a department's mail server is replaced behind the central gateway.

Stages (DESIGN.md): preflight, request_tsl, await_tsl, open_firewall, relay_test,
await_cutover, remove_old_tsl, done. The firewall and the relay test run on the new server
itself, through the host agent's own task queue (`worker.py --host FQDN`); without an agent
they are tasks for a person, with the exact rules and command. Cancel before
`remove_old_tsl` undoes what was done: the firewall rules are removed and a filed entry is
withdrawn.
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
    from activities.postfix import PostfixActivities, postfix_lines
    from activities.relay_test import RETRYABLE, RelayTestActivities
    from checks.report import ServerCheckQuery
    from workflows import policy
    from workflows.migration import Migration, error_text, findings
    from workflows.model import (
        SERVER_STAGES,
        FirewallChange,
        FirewallPlan,
        MoveResult,
        MoveState,
        PostfixCheck,
        RelayTestQuery,
        RelayTranscript,
        ServerIdentity,
        ServerMoveInput,
        ServerQuery,
        StageState,
    )

# the list each relay scope needs an entry on (`internal` needs none)
LISTS = {"external": "tsl", "unsecure": "unsecure", "internal": ""}
LIST_NAMES = {"tsl": "TrustedServerList", "unsecure": "MailOut-Unsecure list"}


def firewall_plan(args: ServerMoveInput) -> FirewallPlan:
    """In from the gateway; out to the relay the server uses (mailout-intern by its addresses)."""
    outbound = {
        "external": [*args.gateway_networks, *args.internal_relay_addresses],
        "internal": list(args.internal_relay_addresses),
        "unsecure": list(args.gateway_networks),
    }[args.relay_scope]
    return FirewallPlan(args.new_fqdn, list(args.gateway_networks), outbound)


@workflow.defn
class ServerMoveWorkflow(Migration):
    KIND = "server"
    STAGES = SERVER_STAGES
    NO_RETURN = "remove_old_tsl"  # from here the old entry is going: the move cannot be undone

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
        self.warnings: list[str] = []
        self.entry_filed = False  # the new entry is (or may be) filed: a cancel withdraws it
        self.firewall_opened = False
        self.firewall_by_hand = False  # a cancel then asks a person to close it again
        self.dns_timeout = policy.seconds(args.timings.dns_timeout)
        self.agent_timeout = policy.seconds(args.timings.agent_timeout)
        if args.relay_scope == "unsecure":
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
                self.await_cutover,
                self.remove_old_entry,
                self.finish,
            ]
        )

    # -- stages -----------------------------------------------------------------------------

    async def preflight(self) -> None:
        a = self.args
        await self.begin("preflight")
        query = ServerQuery(a.new_fqdn, a.new_ipv4, a.new_ipv6, a.entry.sender_domains, a.old_fqdn)
        try:
            self.identity = await self.act(DnsActivities.server_identity, query, self.dns_timeout)
        except ActivityError as err:
            raise ApplicationError(f"preflight: {error_text(err)}", non_retryable=True) from err
        problems = list(self.identity.problems)
        if self.list:
            problems += [f"{field}: {fix}" for field, fix in a.entry.problems()]
        report = await self.check("preflight", CheckActivities.check_server, self.check_query())
        if report:  # the identity problems above have said what the DNS checks find
            problems += [findings([c]) for c in report.errors if c.group != "DNS"]
        if problems:
            raise ApplicationError("preflight: " + "; ".join(problems), non_retryable=True)
        checked = ", ".join(f"{c.address} ↔ {a.new_fqdn}" for c in self.identity.reverse)
        detail = f"forward and reverse DNS match ({checked}); sender domains resolve"
        if report and report.with_verdict("warning"):
            detail += "; warnings: " + findings(report.with_verdict("warning"))
        await self.end("preflight", detail=detail)

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
        return self.args.tsl_form if self.list == "tsl" else self.args.unsecure_form

    def skip_reason(self) -> str:
        if not self.list:
            return f"the internal relay {self.args.relay.host} needs no list entry (campus addresses only)"
        if self.unchanged():
            return f"name and address are unchanged: the {LIST_NAMES[self.list]} entry stays"
        return ""

    async def request_entry(self) -> None:
        stage = "request_tsl"
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        a = self.args
        self.entry_filed = self.portal_mode == "http"  # filed as soon as the request leaves
        how = await self.file(
            stage, self.list, a.new_fqdn, self.entry_values("new entry", a.new_fqdn, [a.new_ipv4]), self.form_url()
        )
        self.entry_filed = True
        await self.end(stage, detail=f"{LIST_NAMES[self.list]}: {how}")

    async def await_entry(self) -> None:
        stage = "await_tsl"
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        receipt = self.receipts.get(self.list)
        how = await self.wait_person(
            stage,
            f"the centre's confirmation that {self.args.new_fqdn} is on the {LIST_NAMES[self.list]} "
            f"(`mailmove confirm {workflow.info().workflow_id} {stage}`)"
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
            return await self.detect_round("await_tsl", [self.portal_source(self.receipts[self.list])])
        try:
            return await self.portal_confirmed(self.list)
        except ActivityError as err:
            self.stages["await_tsl"].last_error = error_text(err)
            return ""

    async def open_firewall(self) -> None:
        stage = "open_firewall"
        await self.begin(stage)
        if not self.args.agent_queue:
            await self.wait_confirm(
                stage,
                f"open tcp/25 on {self.args.new_fqdn} with the rules shown (nftables, iptables or ufw), "
                f"then `mailmove confirm {workflow.info().workflow_id} {stage}`",
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

    def relay_command(self) -> str:
        a = self.args
        return (
            f"mailmove relay-test --relay {a.relay} --helo {a.new_fqdn} --mail-from {a.mail_from} "
            f"--rcpt {a.rcpt} --source {a.new_ipv4}"
            + (" --send" if a.send else "")
            + ("" if a.relay.tls else " --no-tls")
        )

    async def relay_test(self) -> None:
        """On the new server: repeated with backoff until the relay accepts (the TSL entry works)
        or the stage's limit is reached; a cause that needs a person needs attention at once."""
        stage = "relay_test"
        a = self.args
        status = self.stages[stage]
        await self.begin(stage)
        if not a.agent_queue:
            await self.wait_confirm(stage, f"run on {a.new_fqdn}: `{self.relay_command()}`; confirm when it passes")
            await self.end(stage, detail="passed by hand: " + self.confirmed[stage].note)
            return
        await self.check_postfix()
        query = RelayTestQuery(a.relay, a.new_fqdn, a.mail_from, a.rcpt, a.new_ipv4, a.send)
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
                await self.transition(MoveState.WAITING, "waiting", detail=f"{status.waiting_for}: {status.last_error}")
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
        elif check.mismatches:
            warning = (
                f"Postfix on {self.args.new_fqdn} does not use {self.args.relay.host} as required; set in main.cf: "
            )
            self.warnings.append(warning + "; ".join(check.mismatches))
            await self.transition(self.state, "warning", detail=self.warnings[-1])

    async def await_cutover(self) -> None:
        stage = "await_cutover"
        await self.begin(stage)
        a = self.args
        how = await self.wait_person(
            stage,
            f"the switch of mail service from {a.old_fqdn} to {a.new_fqdn}: confirm when the old server "
            f"sends no more mail (`mailmove confirm {workflow.info().workflow_id} {stage}`)",
            overdue="no cut-over",
        )
        await self.end(stage, detail=how)

    async def remove_old_entry(self) -> None:
        stage = "remove_old_tsl"
        if reason := self.skip_reason():
            await self.skip(stage, reason)
            return
        await self.begin(stage)
        a = self.args
        values = self.entry_values("remove entry", a.old_fqdn, self.identity.old_addresses)
        how = await self.file(stage, f"{self.list}-removal", a.old_fqdn, values, self.form_url())
        await self.end(stage, detail=f"removal of {a.old_fqdn}: {how}")

    async def finish(self) -> None:
        await self.begin("done")
        a = self.args
        self.message = f"{a.new_fqdn} sends through {a.relay.host}" + (
            f"; the old server {a.old_fqdn} is off the {LIST_NAMES[self.list]}" if not self.skip_reason() else ""
        )
        await self.complete(CheckActivities.check_server, self.check_query())

    # -- cancel -----------------------------------------------------------------------------

    def undo_plan(self) -> list[str]:
        steps = []
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
        if not self.firewall_by_hand:
            return ""
        return f"; left to do by hand: remove the tcp/25 rules opened on {self.args.new_fqdn}"

    def past_return(self) -> str:
        return f"the old entry is already being removed ({self.stage}); a cancel would not bring it back"

    async def compensate(self) -> None:
        """Undo in reverse order: the firewall rules, then the filed entry (withdrawn by a request)."""
        actor = await self.mark_cancelled()
        done = self.undo_plan()
        a = self.args
        if self.firewall_opened:
            self.firewall_change = await self.act(
                FirewallActivities.close_firewall, self.plan, self.agent_timeout, task_queue=a.agent_queue
            )
        if self.entry_filed:
            values = self.entry_values("remove entry", a.new_fqdn, [a.new_ipv4])
            how = await self.file("request_tsl", f"{self.list}-removal", a.new_fqdn, values, self.form_url())
            withdrawn = self.stages["request_tsl"]
            withdrawn.state, withdrawn.waiting_for, withdrawn.detail = StageState.DONE, "", f"withdrawn: {how}"
        self.message = "cancelled; " + ("; ".join(done) + ": done" if done else "nothing had been changed")
        self.message += self.left_by_hand()
        await self.transition(MoveState.CANCELLED, "cancelled", actor=actor, detail=self.message)

    def details(self) -> dict[str, Any]:
        return {
            "eta": self.stages[self.stage].eta,
            "identity": self.identity,
            "firewall": self.rules,
            "firewall_change": self.firewall_change,
            "postfix": [f"{k} = {v}" for k, v in self.postfix.items()],
            "postfix_check": self.postfix_check,
            "transcript": self.transcript,
            "warnings": list(self.warnings),
        }
