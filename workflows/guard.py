"""GuardWorkflow: one run of a finished move's guard, started by its Temporal Schedule.

The stage-`after` checks again: a domain's (MX exactly the gateway hosts on every authoritative
server, SPF, DMARC, MTA-STS) or a server's (FCrDNS, STARTTLS and the certificate's days, and the
relay test through the host agent when one takes it within `guard.agent_wait`). The store judges
the report against the move's `done` report; a drift not mailed yet is mailed to the contact.
A run that fails is the schedule's to repeat at its next time: nothing here waits for a person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.check import CheckActivities
    from activities.guard import GuardActivities
    from activities.notify import NotifyActivities
    from activities.relay_test import RelayTestActivities
    from mailmove.base import ids
    from mailmove.base.guard import GUARD_WORKFLOW, GuardInput, GuardMailed, GuardResult, GuardRun, GuardVerdict
    from mailmove.base.model import RelayTranscript, Timings
    from mailmove.base.report import Report
    from mailmove.base.vocabulary import Kind
    from workflows import policy
    from workflows.migration import error_text


@workflow.defn(name=GUARD_WORKFLOW)
class GuardWorkflow:
    @workflow.run
    async def run(self) -> GuardResult:
        """What to check is the guard's row, read first: the schedule gives no argument (a payload
        key binds one to the schedule's id, and the run's is `guard:<move id>-<time>`)."""
        self.notes: list[str] = []
        move_id = ids.guarded(workflow.info().workflow_id)
        self.args: GuardInput = await workflow.execute_activity_method(
            GuardActivities.guard_input,
            move_id,
            start_to_close_timeout=policy.AUDIT_TIMEOUT,
            schedule_to_close_timeout=policy.AUDIT_TIMEOUT + policy.seconds(Timings().retry_limit),
            retry_policy=policy.STAGE_RETRY,
        )
        args = self.args
        report = await self.check()
        verdict: GuardVerdict = await self.act(
            GuardActivities.assess, GuardRun(args.workflow_id, report, args.contact), policy.AUDIT_TIMEOUT
        )
        mailed = verdict.notice is not None and await self.mail(verdict)
        return GuardResult(args.subject, report.worst, [c.id for c in verdict.drift], mailed, "; ".join(self.notes))

    async def act(self, method: Callable, arg: Any, timeout: timedelta, **options: Any) -> Any:
        """One activity, retried as a stage's is, within `timing.retry_limit`; `options` name the
        host agent's task queue and how long to wait for it to take the activity."""
        return await workflow.execute_activity_method(
            method, arg, **options, **policy.stage_activity(timeout, self.args.timings)
        )

    async def check(self) -> Report:
        a = self.args
        timeout = policy.seconds(a.timings.check_timeout)
        if a.kind == Kind.DOMAIN:
            return await self.act(CheckActivities.check_domain, a.domain, timeout)
        transcript = await self.relay_test()
        return await self.act(CheckActivities.check_server, replace(a.server, relay_test=transcript), timeout)

    async def relay_test(self) -> RelayTranscript | None:
        """Through the host agent, if one takes it within `agent_wait` (a wait for a start is never
        retried); else None: the check says the relay test was not run."""
        a = self.args
        if a.relay is None or not a.agent_queue:
            return None
        query = replace(a.relay, probe_id=str(workflow.uuid4()))
        try:
            return await self.act(
                RelayTestActivities.relay_test,
                query,
                policy.seconds(a.timings.agent_timeout),
                task_queue=a.agent_queue,
                schedule_to_start_timeout=policy.seconds(a.agent_wait),
            )
        except ActivityError as err:
            self.notes.append(f"relay test not run: {error_text(err)}")
            return None

    async def mail(self, verdict: GuardVerdict) -> bool:
        """The drift to the contact, once (the notice's key); a mail that cannot be sent is the
        run's note, and the next run tries again. Without `notify.sender` nothing is sent, and the
        drift counts as told."""
        try:
            sent = await self.act(NotifyActivities.send_notice, verdict.notice, policy.NOTIFY_TIMEOUT)
        except ActivityError as err:
            self.notes.append(f"the drift mail to {self.args.contact} was not sent: {error_text(err)}")
            return False
        await self.act(
            GuardActivities.mailed, GuardMailed(self.args.workflow_id, verdict.fingerprint), policy.AUDIT_TIMEOUT
        )
        return sent
