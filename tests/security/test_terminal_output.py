"""What an attacker says reaches the terminal as text: a relay whose reply carries Rich markup
and escape sequences (a colour, a window title), and a note with markup, are printed by
`relay-test` and `show` as plain characters: no crash, no escape sequence written."""

from __future__ import annotations

from mailmove.sandbox.smtp import RelayHandler, SmtpServer
from mailmove.sandbox.world import RELAYS
from tests.support.moves import terminate_running, until_stage
from tests.support.processes import mailmove
from tests.support.server_move import RELAY_ARGS

HOSTILE = "[/] \x1b[31mRED \x1b]0;pwned-title\x07 [bold]x"
DOMAIN, LEGACY = "chem.sandbox.test", "mail.chem.sandbox.test"


class HostileRelay(RelayHandler):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return f"554 5.7.1 {HOSTILE}"


def shows_no_escape(out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out, repr(out[:400])


async def test_a_hostile_relay_reply_is_printed_as_text(cli_world):
    world, settings, config = cli_world
    relay = SmtpServer(HostileRelay(), world.ca, [RELAYS["external"]]).start()
    try:
        args = ["relay-test", "--relay", f"{RELAYS['external']}:{relay.port}", *RELAY_ARGS, "--ca", str(world.ca_file)]
        code, out, err = await mailmove(config, *args)
    finally:
        relay.stop()
    assert code == 1, err  # relaying refused: a failed test, not a crash
    assert "Traceback" not in err and "MarkupError" not in err
    shows_no_escape(out + err)
    assert "554 5.7.1 [/] \ufffd[31mRED \ufffd]0;pwned-title\ufffd [bold]x" in out  # the words, defused


async def test_a_note_with_markup_is_shown_as_text(cli_world, dev_env):
    world, settings, config = cli_world
    try:
        code, out, err = await mailmove(config, "domain", "start", DOMAIN, "--legacy-mx", LEGACY)
        assert code == 0, err
        await until_stage(dev_env.client.get_workflow_handle(f"domain-move:{DOMAIN}"), "request_domain", "waiting")
        code, out, err = await mailmove(config, "confirm", DOMAIN, "request_domain", "--note", HOSTILE)
        assert code == 2 and "note" in err, err  # control characters are refused at the door
        shows_no_escape(err)
        code, out, err = await mailmove(config, "confirm", DOMAIN, "request_domain", "--note", "[/] [bold]x")
        assert code == 0, err
        shows_no_escape(out)
        code, out, err = await mailmove(config, "show", DOMAIN)
        assert code == 0 and "Traceback" not in err, err
        shows_no_escape(out)
        assert "[/]" in out and "[bold]x" in out
    finally:
        await terminate_running(dev_env.client, f"domain-move:{DOMAIN}")
