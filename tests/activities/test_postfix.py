"""Postfix on the host agent: the check of its relay lines with the real `postconf` from a main.cf
of the test's own, and the relay change against a real Postfix the test starts (its own
configuration directory, queue and log, a free loopback port), relaying to an aiosmtpd relay
with STARTTLS."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import json
import os
import subprocess
from pathlib import Path

import pytest
import trustme
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.postfix import RECORD, PostfixActivities, run
from mailmove.base.config import AgentConfig
from mailmove.base.model import MtaProbe, Relay
from mailmove.base.postfix import postfix_lines, relay_settings
from mailmove.sandbox.bind import free_port
from mailmove.sandbox.smtp import RelayHandler, SmtpServer

MAILOUT = Relay("mailout.hrz.tu-darmstadt.de", 25, tls=True)
UNSECURE = Relay("mailout-unsecure.hrz.tu-darmstadt.de", 25, tls=False)
BEFORE = "relayhost = [smtp.old-relay.example]\nsmtp_tls_security_level = may\n"
ORIGINAL = {
    "relayhost": "[smtp.old-relay.example]",
    "smtp_tls_security_level": "may",
    "smtp_tls_mandatory_protocols": None,
    "smtp_tls_CAfile": None,
}
PROBE = MtaProbe("postmaster@chem.sandbox.test", "someone@example.org", "0b6f7c2e-probe")


def for_move(workflow_id: str) -> ActivityEnvironment:
    """The activity as a worker runs it for one move: the record of main.cf is that move's."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


MOVE = for_move("server-move-mx2.chem.sandbox.test")


def postconf(tmp_path: Path, main_cf: str) -> PostfixActivities:
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text("")
    return PostfixActivities(AgentConfig(postfix_config_dir=str(tmp_path)), [])


@pytest.fixture
def relay():
    """An aiosmtpd relay on a free loopback port that insists on STARTTLS; its relay as the
    agent's configuration would name it (an address literal: Postfix asks no DNS)."""
    servers = []

    def start(handler: RelayHandler | None = None) -> tuple[SmtpServer, Relay]:
        servers.append(SmtpServer(handler or RelayHandler(), trustme.CA(), ["mailout.sandbox.test"]).start())
        return servers[-1], Relay("127.0.0.1", servers[-1].port, True)

    yield start
    for server in servers:
        server.stop()


def reloads(local) -> int:
    return local.log.read_text().count("reload -- version") if local.log.exists() else 0


def test_the_lines_for_each_relay():
    assert postfix_lines(MAILOUT) == {
        "relayhost": "[mailout.hrz.tu-darmstadt.de]",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
    }
    assert postfix_lines(UNSECURE) == {"relayhost": "[mailout-unsecure.hrz.tu-darmstadt.de]"}
    assert postfix_lines(Relay("relay.example", 2525, True))["relayhost"] == "[relay.example]:2525"
    # what the agent's change sets: the CA file only for TLS, the plain level for the unsecure relay
    assert relay_settings(MAILOUT, "/etc/ssl/certs/ca-certificates.crt")["smtp_tls_CAfile"].startswith("/etc/ssl")
    assert relay_settings(UNSECURE, "/etc/ssl/certs/ca-certificates.crt") == {
        "relayhost": "[mailout-unsecure.hrz.tu-darmstadt.de]",
        "smtp_tls_security_level": "may",
    }


@pytest.mark.slow  # postconf
@pytest.mark.parametrize(
    "main_cf",
    [
        "relayhost = [mailout.hrz.tu-darmstadt.de]\nsmtp_tls_security_level = encrypt\n"
        "smtp_tls_mandatory_protocols = >=TLSv1.2\n",
        # the centre's own example (no brackets), port given, the older exclusion syntax
        "relayhost = mailout.hrz.tu-darmstadt.de:25\nsmtp_tls_security_level = secure\n"
        "smtp_tls_mandatory_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1\n",
    ],
)
async def test_a_postfix_set_up_as_required(tmp_path, main_cf):
    check = await postconf(tmp_path, main_cf).check_postfix(MAILOUT)
    assert check.mismatches == [] and not check.note
    assert check.actual["relayhost"].lower().startswith(("[mailout", "mailout"))


@pytest.mark.slow  # postconf
async def test_a_postfix_that_sends_elsewhere_without_tls(tmp_path):
    check = await postconf(
        tmp_path, "relayhost = smtp.old-relay.example\nsmtp_tls_security_level = may\n"
    ).check_postfix(MAILOUT)
    assert check.mismatches == [
        "relayhost = [mailout.hrz.tu-darmstadt.de]",
        "smtp_tls_security_level = encrypt",
        "smtp_tls_mandatory_protocols = >=TLSv1.2",  # Postfix's default still admits TLS 1.0
    ]
    assert check.actual["smtp_tls_security_level"] == "may"


@pytest.mark.slow  # postconf
async def test_the_unsecure_relay_needs_only_the_relayhost(tmp_path):
    check = await postconf(tmp_path, "relayhost = [mailout-unsecure.hrz.tu-darmstadt.de]\n").check_postfix(UNSECURE)
    assert check.mismatches == []


@pytest.mark.slow  # postconf
async def test_no_postfix_is_a_note_not_a_failure(tmp_path):
    check = await PostfixActivities(AgentConfig(postconf=("no-such-postconf",)), []).check_postfix(MAILOUT)
    assert check.mismatches == [] and "not found" in check.note
    missing = AgentConfig(postfix_config_dir=str(tmp_path / "missing"))
    check = await PostfixActivities(missing, []).check_postfix(MAILOUT)
    assert check.mismatches == [] and check.note.startswith("postconf failed: postconf: fatal: open ")


# -- the relay change against a real Postfix ------------------------------------------------------


async def test_the_relay_lines_are_set_once_and_restored(local_postfix, relay):
    local = local_postfix(BEFORE)
    _, mailout = relay()
    agent = PostfixActivities(local.agent(), [mailout])
    assert local.explicit() == ORIGINAL

    change = await MOVE.run(agent.configure_postfix, mailout)
    wanted = {
        "relayhost": f"[127.0.0.1]:{mailout.port}",
        "smtp_tls_security_level": "encrypt",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
    }
    assert change.changed and change.previous == ORIGINAL and change.values == wanted
    assert local.explicit() == {**wanted, "smtp_tls_CAfile": None}
    assert reloads(local) == 1 and (local.config_dir / RECORD).exists()

    main_cf = (local.config_dir / "main.cf").read_bytes()
    again = await MOVE.run(agent.configure_postfix, mailout)
    assert not again.changed and again.previous == ORIGINAL  # the first record, not today's values
    assert (local.config_dir / "main.cf").read_bytes() == main_cf and reloads(local) == 1

    restored = await MOVE.run(agent.restore_postfix, mailout)
    assert restored.changed and local.explicit() == ORIGINAL and reloads(local) == 2
    assert not (local.config_dir / RECORD).exists()
    assert not (await MOVE.run(agent.restore_postfix, mailout)).changed  # a second cancel: nothing left to do
    assert local.explicit() == ORIGINAL


async def test_a_value_changed_by_hand_since_stays_on_restore(local_postfix, relay):
    local = local_postfix(BEFORE)
    _, mailout = relay()
    ca_file = str(local.root / "ca.pem")
    agent = PostfixActivities(local.agent(postfix_ca_file=ca_file), [mailout])
    await MOVE.run(agent.configure_postfix, mailout)
    assert local.explicit()["smtp_tls_CAfile"] == ca_file
    subprocess.run(["postconf", "-c", str(local.config_dir), "-e", "relayhost=[smtp.new-plan.example]"], check=True)
    restored = await MOVE.run(agent.restore_postfix, mailout)
    assert local.explicit() == {**ORIGINAL, "relayhost": "[smtp.new-plan.example]"}  # the CA file removed again
    assert "changed since by someone, left as they are: relayhost" in restored.detail


async def test_only_the_configured_relays(local_postfix, relay):
    local = local_postfix(BEFORE)
    _, mailout = relay()
    agent = PostfixActivities(local.agent(), [mailout])
    with pytest.raises(ApplicationError, match="configure_postfix refused relay: ") as caught:
        await MOVE.run(agent.configure_postfix, Relay("127.0.0.1", mailout.port + 1, True))
    assert caught.value.type == "AgentRefused" and local.explicit() == ORIGINAL


async def test_a_failed_check_puts_the_values_back_at_once(local_postfix, relay):
    """The configuration is broken where `postfix check` looks (a log file, no postlog service):
    the check fails after the edit, and the values of before are back before the error."""
    local = local_postfix(BEFORE)
    _, mailout = relay()
    master_cf = local.config_dir / "master.cf"
    master_cf.write_text("".join(line for line in master_cf.read_text().splitlines(True) if "postlogd" not in line))
    agent = PostfixActivities(local.agent(), [mailout])
    with pytest.raises(ApplicationError) as caught:
        await MOVE.run(agent.configure_postfix, mailout)
    message = caught.value.message
    assert message.startswith("postfix check failed: ") and "missing 'postlog' service in master.cf" in message
    assert "the previous values are back: relayhost = [smtp.old-relay.example]" in message
    assert caught.value.non_retryable and local.explicit() == ORIGINAL
    assert not (local.config_dir / RECORD).exists() and reloads(local) == 0


async def test_a_failed_reload_puts_the_values_back_at_once(local_postfix, relay):
    local = local_postfix(BEFORE, start=False)  # a Postfix that is not running cannot be reloaded
    _, mailout = relay()
    with pytest.raises(ApplicationError) as caught:
        await MOVE.run(PostfixActivities(local.agent(), [mailout]).configure_postfix, mailout)
    assert caught.value.message.startswith("postfix reload failed: postfix/postfix-script: fatal: ")
    assert "the Postfix mail system is not running" in caught.value.message
    assert local.explicit() == ORIGINAL and not (local.config_dir / RECORD).exists()


async def test_a_probe_message_reaches_the_relay_through_postfix(local_postfix, relay):
    local = local_postfix(BEFORE)
    server, mailout = relay()
    agent = PostfixActivities(local.agent(), [mailout])
    await MOVE.run(agent.configure_postfix, mailout)
    result = await agent.probe_postfix(PROBE)
    assert result.relay == f"127.0.0.1[127.0.0.1]:{mailout.port}"
    assert result.answer == "250 2.0.0 Ok: queued as Q000001"  # the relay's own reply
    [seen] = server.handler.seen
    assert seen.tls and seen.rcpt == PROBE.rcpt and seen.mail_from == PROBE.mail_from
    [message] = [email.message_from_bytes(m) for m in server.handler.messages]
    assert message["Message-ID"] == result.message_id and PROBE.probe_id in result.message_id
    assert message["Date"] and message["X-Mailmove-Probe"] == PROBE.probe_id
    assert f"{result.queue_id}: to=<{PROBE.rcpt}>" in local.log.read_text()


async def test_a_deferred_probe_names_the_relays_answer(local_postfix, relay):
    local = local_postfix(BEFORE)
    server, mailout = relay(RelayHandler(greylist=10))
    agent = PostfixActivities(local.agent(), [mailout])
    await MOVE.run(agent.configure_postfix, mailout)
    with pytest.raises(ApplicationError) as caught:
        await agent.probe_postfix(PROBE)
    assert caught.value.type == "ProbeNotRelayed" and " was deferred by Postfix: " in str(caught.value)
    assert "said: 451 4.7.1 <someone@example.org>: Recipient address rejected: Greylisted" in str(caught.value)
    assert server.handler.messages == []


async def test_a_relay_that_is_down_is_a_deferral(local_postfix):
    """The relay line points at a free port where nothing listens: Postfix keeps the message."""
    local = local_postfix(f"relayhost = [127.0.0.1]:{free_port()}\n")
    with pytest.raises(ApplicationError, match=r"the probe message \w+ was deferred by Postfix: .*Connection refused"):
        await PostfixActivities(local.agent(), []).probe_postfix(PROBE)


async def test_a_message_delivered_past_the_relays_is_no_proof(local_postfix, relay):
    """main.cf relays to a server the agent does not know as one of the gateway's: Postfix logs
    `status=sent`, and the probe still fails, naming where the message went."""
    local = local_postfix(BEFORE)
    server, elsewhere = relay()
    await MOVE.run(PostfixActivities(local.agent(), [elsewhere]).configure_postfix, elsewhere)
    with pytest.raises(ApplicationError) as caught:
        await PostfixActivities(local.agent(), [MAILOUT]).probe_postfix(PROBE)
    assert caught.value.type == "ProbeNotRelayed" and caught.value.non_retryable
    assert f"was delivered by 127.0.0.1[127.0.0.1]:{elsewhere.port} (" in caught.value.message
    assert "not by one of the gateway's relays" in caught.value.message
    assert len(server.handler.messages) == 1  # it did go out: only not through the gateway


async def test_a_cancel_never_undoes_another_moves_change(local_postfix, relay):
    """Move A set the relay and finished; move B on the same server finds it set, and its
    cancel leaves it so. A's own record still restores A's values."""
    local = local_postfix(BEFORE)
    _, mailout = relay()
    agent = PostfixActivities(local.agent(), [mailout])
    first, later = for_move("server-move-a"), for_move("server-move-b")
    assert (await first.run(agent.configure_postfix, mailout)).changed
    set_up = local.explicit()
    again = await later.run(agent.configure_postfix, mailout)
    assert not again.changed and again.previous == set_up  # B's "before" is today's main.cf
    undone = await later.run(agent.restore_postfix, mailout)
    assert not undone.changed and "this move has not changed Postfix" in undone.detail
    assert local.explicit() == set_up and (local.config_dir / RECORD).exists()
    assert (await first.run(agent.restore_postfix, mailout)).changed and local.explicit() == ORIGINAL


async def test_a_retry_after_a_lost_attempt_checks_and_reloads(local_postfix, relay):
    """An attempt lost after its edit and before its reload left main.cf edited, Postfix running
    the old values: the retry finds nothing to edit, and checks and reloads all the same."""
    local = local_postfix(BEFORE)
    _, mailout = relay()
    agent = PostfixActivities(local.agent(), [mailout])
    record = {"move": MOVE.info.workflow_id, "values": ORIGINAL, "applied": False}
    (local.config_dir / RECORD).write_text(json.dumps(record))
    wanted = relay_settings(mailout)
    subprocess.run(
        ["postconf", "-c", str(local.config_dir), "-e", *(f"{k}={v}" for k, v in wanted.items())], check=True
    )
    change = await MOVE.run(agent.configure_postfix, mailout)
    assert change.changed and change.previous == ORIGINAL and reloads(local) == 1
    assert json.loads((local.config_dir / RECORD).read_text())["applied"] is True
    assert not (await MOVE.run(agent.configure_postfix, mailout)).changed and reloads(local) == 1
    assert (await MOVE.run(agent.restore_postfix, mailout)).changed and local.explicit() == ORIGINAL


async def test_a_cancelled_attempt_leaves_no_command_running(tmp_path):
    """A command of an attempt that is cancelled (the move cancelled, the worker stopping) is
    killed with its process group, not left to edit main.cf after the attempt has ended."""
    pid_file = tmp_path / "pid"
    command = asyncio.ensure_future(run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"]))
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.05)
    command.cancel()
    with pytest.raises(asyncio.CancelledError):
        await command
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
