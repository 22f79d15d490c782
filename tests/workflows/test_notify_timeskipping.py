"""E-mail to a move's contact, through the internal relay stand-in (aiosmtpd, STARTTLS): when a
person's step waits, when it is overdue, and when the move is done; each with a `Date` and a
`Message-ID` of its own, sent once even when the activity runs again."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime

from activities.dns import DnsActivities
from activities.notify import NotifyActivities
from mailmove.base.config import NotifyConfig
from mailmove.base.inputs import DomainMoveRequest
from mailmove.base.model import ConfirmInput, MoveState, Notice
from mailmove.service import control
from tests.support.moves import status_of, until_quiet, until_stage
from tests.support.polling import wait_for
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow

DOMAIN = "chem.sandbox.test"
CONTACT = "postmaster@chem.sandbox.test"
DAY = 86400


def mails(world) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m, policy=email.policy.default) for m in world.relays["internal"].handler.messages]


async def test_the_contact_hears_of_waits_overdue_steps_and_the_end(time_env, worker_for, sandbox_factory):
    world = sandbox_factory(confirm_after=10**9)
    settings = settings_for(
        world, time_env, portal_mode="manual", notify=True,
        timing={"probe_interval": DAY, "reminder_interval": DAY, "escalate_after": 3 * DAY},
    )  # fmt: skip
    await worker_for(time_env.client, settings)
    move = await control.prepare_domain_move(settings, DomainMoveRequest(DOMAIN, f"mail.{DOMAIN}", contact=CONTACT))
    handle = time_env.client.get_workflow_handle_for(
        DomainMoveWorkflow.run, await control.start_domain_move(time_env.client, settings, move)
    )
    await until_stage(handle, "request_domain", "waiting")

    async def arrived(count: int):  # the mail follows the status by one activity
        return mails(world) if len(mails(world)) >= count else None

    [waiting] = await wait_for(lambda: arrived(1), what="the first mail")
    assert waiting["To"] == CONTACT and waiting["From"] == "mailmove <mailmove@sandbox.test>"
    assert waiting["Subject"] == f"[mailmove] {DOMAIN}: request_domain waits for you"
    assert f"mailmove confirm domain-move:{DOMAIN} request_domain" in waiting.get_content()
    assert waiting["Auto-Submitted"] == "auto-generated"

    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("request_domain", "alice", "filed"))
    await until_stage(handle, "await_registration", "waiting")
    await time_env.sleep(timedelta(days=4))
    status = await status_of(handle)
    assert status.state == MoveState.NEEDS_ATTENTION
    subjects = [m["Subject"] for m in await wait_for(lambda: arrived(3), what="three mails")]
    assert subjects[1:] == [
        f"[mailmove] {DOMAIN}: await_registration waits for you",
        f"[mailmove] {DOMAIN} needs attention at await_registration",
    ]  # reminders are in the history, not in the contact's mailbox
    await until_quiet(handle)
    await handle.execute_update(DomainMoveWorkflow.confirm, ConfirmInput("await_registration", "bob", "registered"))
    assert (await handle.result()).state == MoveState.DONE

    sent = mails(world)
    assert sent[-1]["Subject"] == f"[mailmove] {DOMAIN}: the move is done"
    assert "may now be switched off" in sent[-1].get_content()
    assert len({m["Message-ID"] for m in sent}) == len(sent) == 4  # unique, one each
    assert all(m["Message-ID"].endswith("@sandbox.test>") and parsedate_to_datetime(m["Date"]) for m in sent)
    seen = world.relays["internal"].handler.seen
    assert all(s.tls and s.mail_from == "mailmove@sandbox.test" and s.rcpt == CONTACT for s in seen)


async def test_a_notice_is_sent_once(sandbox_factory, time_env):
    world = sandbox_factory()
    settings = replace(
        settings_for(world, time_env, notify=True),
        notify=NotifyConfig(sender="mailmove@sandbox.test", dashboard_url="https://mailmove.sandbox.test/"),
    )
    notify = NotifyActivities(settings, DnsActivities(settings))
    notice = Notice(
        "5b7c0d5e-2f1e-4c38-9a57-0c3f8f0f6f4a", f"domain-move:{DOMAIN}", "done", CONTACT, "done", "it is done"
    )
    assert await notify.send_notice(notice) and await notify.send_notice(notice)  # a retried activity
    assert len(mails(world)) == 1
    assert mails(world)[0]["Message-ID"] == "<5b7c0d5e-2f1e-4c38-9a57-0c3f8f0f6f4a@sandbox.test>"
    link = f"On the dashboard: https://mailmove.sandbox.test/migrations/domain-move:{DOMAIN}"
    assert link in mails(world)[0].get_content()


async def test_without_a_sender_nothing_is_sent(sandbox_factory, time_env):
    world = sandbox_factory()
    settings = settings_for(world, time_env)
    notice = Notice("k", f"domain-move:{DOMAIN}", "done", CONTACT, "done", "it is done")
    assert await NotifyActivities(settings, DnsActivities(settings)).send_notice(notice) is False
    assert mails(world) == []
