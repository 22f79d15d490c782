"""Postfix on the host agent's machine: the check of its relay lines (a mismatch is a warning
with the lines to set), the change of those lines itself, its undoing, and a probe message
through the new path.

The change sets only `SETTABLE` (mailmove/base/postfix.py), only to the lines of one of the
gateway's relays of the agent's own configuration, in the configuration directory that
configuration names (`agent.postfix_config_dir`, given to every command as `-c`). Before the
first change the agent records main.cf's own values of those names beside it
(`mailmove-before.json`), so a retried or repeated change keeps the first record and a restore
brings back exactly what was there. Every change is `postconf -e`/`-X`, then `postfix check`,
`postfix reload`, and `postconf -n` to see that the values took; a failure on the way puts the
values of just before back at once and names Postfix's own message.

Commands run from argument lists, never a shell, each within a time and an output limit.
Postfix's commands write their messages to stderr only when it is a terminal (else to the
log), so stderr is a pseudo-terminal of the agent's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import agent_input
from activities.heartbeat import beating
from mailmove.base.config import AgentConfig
from mailmove.base.model import MtaProbe, MtaProbeResult, PostfixChange, PostfixCheck, Relay
from mailmove.base.postfix import (
    PARAMETERS,
    SETTABLE,
    Values,
    edits,
    explicit,
    mismatches,
    parse_postconf,
    postfix_lines,
    relay_settings,
    relayed_through,
    restoration,
    shown,
)

COMMAND_TIMEOUT = 60.0  # seconds; `postfix check` takes a few
OUTPUT_LIMIT = 1 << 20  # bytes kept of a command's stdout; stderr keeps 64 KiB
ERROR_LIMIT = 1 << 16
LOG_CHUNK = 4 << 20  # bytes of the mail log read at most per look
SMTP_TIMEOUT = 30.0
RECORD = "mailmove-before.json"  # beside main.cf: its values before mailmove's first change
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass
class Ran:
    returncode: int
    out: str
    err: str  # Postfix's messages, one a line

    def message(self) -> str:
        return (self.err or self.out).strip() or f"exit status {self.returncode}"


async def run(command: Sequence[str], timeout: float = COMMAND_TIMEOUT, limit: int = OUTPUT_LIMIT) -> Ran:
    """The command, its stdout cut to `limit` bytes, its stderr (a pseudo-terminal) to
    ERROR_LIMIT; past `timeout` its whole process group is killed and an error raised."""
    master, slave = os.openpty()
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=slave,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        err = _Terminal(master)
        try:
            out = await asyncio.wait_for(_read(process.stdout, limit), timeout)
            await asyncio.wait_for(process.wait(), timeout)
        except BaseException as stopped:  # past its time, or the attempt cancelled: the command goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.shield(process.wait())
            if isinstance(stopped, TimeoutError):
                raise ApplicationError(
                    f"`{' '.join(command)}` did not finish within {timeout:g} s",
                    type="PostfixTimeout",
                    non_retryable=True,
                ) from None
            raise
        finally:
            err.close()
    finally:
        os.close(master)
    return Ran(process.returncode, out.decode(errors="replace"), err.text())


async def _read(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything the stream gives (so the writer never blocks), the first `limit` bytes kept."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: max(limit - len(kept), 0)]
    return bytes(kept)


class _Terminal:
    """What a command writes to the pseudo-terminal it has for stderr, read as it comes."""

    def __init__(self, fd: int):
        self.fd = fd
        self.kept = bytearray()
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(fd, self._drain)

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: every writer has closed it
                chunk = b""
            if not chunk:
                self.loop.remove_reader(self.fd)
                return
            self.kept += chunk[: max(ERROR_LIMIT - len(self.kept), 0)]

    def close(self) -> None:
        self._drain()  # what is left once the command has exited
        self.loop.remove_reader(self.fd)

    def text(self) -> str:
        return self.kept.decode(errors="replace").replace("\r\n", "\n").strip()


@dataclass(frozen=True)
class Record:
    """main.cf's values before a move's first change (`mailmove-before.json`): which move made
    it, and whether its change was checked and reloaded (else a retry does that again)."""

    move: str  # the workflow id
    values: Values
    applied: bool


def _move() -> str:
    """The move this attempt is for: the server's word, not an argument's."""
    return activity.info().workflow_id


class PostfixFailed(Exception):
    """A command of a change failed; the message is Postfix's own."""


class PostfixActivities:
    """Runs on the host agent. `relays`: the gateway's relays of the agent's configuration, the
    only ones the change may set and the probe message may go to. One change at a time: two
    moves on one server would otherwise edit main.cf between each other's check and reload."""

    def __init__(self, agent: AgentConfig, relays: Sequence[Relay]):
        self.agent = agent
        self.relays = tuple(relays)
        self.record_path = Path(agent.postfix_config_dir) / RECORD
        self.changing = asyncio.Lock()

    def _postconf(self, *args: str) -> list[str]:
        return [*self.agent.postconf, "-c", self.agent.postfix_config_dir, *args]

    def _postfix(self, *args: str) -> list[str]:
        return [*self.agent.postfix, "-c", self.agent.postfix_config_dir, *args]

    @activity.defn
    @beating
    async def check_postfix(self, relay: Relay) -> PostfixCheck:
        with agent_input.refusing("check_postfix"):
            agent_input.relay("relay", relay)
        expected = postfix_lines(relay)
        try:
            ran = await run(self._postconf(*PARAMETERS))
        except FileNotFoundError:
            return PostfixCheck(expected, {}, [], note=f"{self.agent.postconf[0]} not found: Postfix was not checked")
        if ran.returncode != 0:
            return PostfixCheck(expected, {}, [], note=f"postconf failed: {ran.message()}")
        actual = parse_postconf(ran.out)
        return PostfixCheck(expected, actual, mismatches(relay, actual))

    # -- the change ---------------------------------------------------------------------------

    @activity.defn
    @beating
    async def configure_postfix(self, relay: Relay) -> PostfixChange:
        """main.cf relays through `relay` (one of the configured ones): nothing is touched when
        it already does; the values before mailmove's first change are recorded first."""
        with agent_input.refusing("configure_postfix"):
            agent_input.configured_relay("relay", relay, self.relays)
        target = relay_settings(relay, self.agent.postfix_ca_file)
        async with self.changing:
            current = await self._explicit()
            record = self._record()
            if not any(edits(current, target)) and (record is None or record.applied):
                previous = record.values if record is not None else current
                return PostfixChange(False, previous, dict(target), f"Postfix already relays through {relay}")
            first = record is None
            # what a failure puts back: today's values, but after an attempt lost halfway those of before it
            fallback = current if first or record.applied else {**current, **record.values}
            if first:
                record = Record(_move(), current, applied=False)
            elif record.applied:  # set, then changed by someone: set again, the first values kept
                record = replace(record, applied=False)
            self._write_record(record)  # not yet applied: a retry after a lost attempt checks and reloads
            try:
                await self._change(current, target, fallback)
            except PostfixFailed as failure:
                if first:  # the change did not stay: nothing to restore
                    self.record_path.unlink(missing_ok=True)
                raise ApplicationError(str(failure), type="PostfixFailed", non_retryable=True) from None
            self._write_record(replace(record, applied=True))
        return PostfixChange(
            True, record.values, dict(target), f"set {shown(dict(target))}; `postfix check` passed, Postfix reloaded"
        )

    @activity.defn
    @beating
    async def restore_postfix(self, relay: Relay) -> PostfixChange:
        """The recorded values back (a cancelled move), except where someone has changed one
        since mailmove set it for `relay`; nothing to do when this move has no record (another
        move's record is that move's: a cancel never undoes a move that has finished)."""
        with agent_input.refusing("restore_postfix"):
            agent_input.relay("relay", relay)
        async with self.changing:
            record = self._record()
            if record is None:
                return PostfixChange(False, {}, {}, "nothing to restore: this move has not changed Postfix here")
            current = await self._explicit()
            target, left = restoration(record.values, current, relay_settings(relay, self.agent.postfix_ca_file))
            changed = any(edits(current, target))
            if changed:
                try:
                    await self._change(current, target, current)
                except PostfixFailed as failure:
                    raise ApplicationError(str(failure), type="PostfixFailed", non_retryable=True) from None
            self.record_path.unlink(missing_ok=True)
        detail = f"restored {shown(target)}" if changed else "main.cf already had the recorded values"
        if left:
            detail += f"; changed since by someone, left as they are: {', '.join(left)}"
        return PostfixChange(changed, record.values, target, detail)

    async def _change(self, current: Values, target: Values, fallback: Values) -> None:
        """Edit, check, reload, verify; on a failure the values of `fallback` back at once (and
        reloaded again if the failed ones were)."""
        reloaded = False
        try:
            await self._edit(current, target)
            await self._must(self._postfix("check"), "postfix check")
            await self._must(self._postfix("reload"), "postfix reload")
            reloaded = True
            after = await self._explicit()
            if wrong := [name for name, value in target.items() if after.get(name) != value]:
                raise PostfixFailed(f"after the reload `postconf -n` shows {shown({n: after[n] for n in wrong})}")
        except PostfixFailed as failure:
            undo = {name: fallback.get(name) for name in target}
            try:
                await self._edit(await self._explicit(), undo)
                if reloaded:
                    await self._must(self._postfix("reload"), "postfix reload")
            except PostfixFailed as again:
                raise PostfixFailed(f"{failure}; putting back {shown(undo)} failed too: {again}") from None
            raise PostfixFailed(f"{failure}; the previous values are back: {shown(undo)}") from None

    async def _edit(self, current: Values, target: Values) -> None:
        to_set, to_remove = edits(current, target)
        if to_set:
            await self._must(self._postconf("-e", *to_set), "postconf -e")
        if to_remove:
            await self._must(self._postconf("-X", *to_remove), "postconf -X")

    async def _must(self, command: list[str], what: str) -> Ran:
        try:
            ran = await run(command)
        except FileNotFoundError as exc:
            raise PostfixFailed(f"{what}: {command[0]} is not installed") from exc
        if ran.returncode != 0:
            raise PostfixFailed(f"{what} failed: {ran.message()}")
        return ran

    async def _explicit(self) -> Values:
        """main.cf's own values of SETTABLE (`postconf -n`)."""
        try:
            ran = await self._must(self._postconf("-n", *SETTABLE), "postconf -n")
        except PostfixFailed as failure:
            raise ApplicationError(str(failure), type="PostfixFailed", non_retryable=True) from None
        return explicit(ran.out)

    def _record(self) -> Record | None:
        """This move's record, or None: none here, or one left by another move (finished, or
        cancelled without its restore), which this move replaces when it changes main.cf."""
        try:
            data = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ApplicationError(f"{self.record_path} cannot be read: {exc}", non_retryable=True) from exc
        values = data.get("values") if isinstance(data, dict) else None
        if not (
            isinstance(values, dict)
            and isinstance(data.get("move"), str)
            and isinstance(data.get("applied"), bool)
            and all(name in SETTABLE and (value is None or isinstance(value, str)) for name, value in values.items())
        ):
            raise ApplicationError(f"{self.record_path} is not mailmove's record of main.cf", non_retryable=True)
        record = Record(data["move"], values, data["applied"])
        return record if record.move == _move() else None

    def _write_record(self, record: Record) -> None:
        """Written whole or not at all (a file of its own, synced, then renamed), root's alone."""
        partial = self.record_path.with_suffix(".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(asdict(record), file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(self.record_path)

    # -- the probe message --------------------------------------------------------------------

    @activity.defn
    @beating
    async def probe_postfix(self, probe: MtaProbe) -> MtaProbeResult:
        """Submit a message to the local Postfix and wait until its log shows it handed to the
        relay; a deferral or a bounce is an error naming the relay's answer."""
        with agent_input.refusing("probe_postfix"):
            agent_input.mta_probe(probe)
        log = MailLog(Path(self.agent.postfix_log))
        message = probe_message(probe)
        queue_id = await self._submit(message)
        deadline = time.monotonic() + self.agent.postfix_probe_wait
        while True:
            if delivery := log.delivery(queue_id):
                relay, status, answer = delivery
                if status == "sent" and relayed_through(relay, self.relays):
                    return MtaProbeResult(queue_id, message["Message-ID"], relay, answer)
                if status == "sent":
                    raise ApplicationError(
                        f"the probe message {queue_id} was delivered by {relay} ({answer}), not by one of the "
                        f"gateway's relays: Postfix does not relay through the gateway",
                        type="ProbeNotRelayed",
                        non_retryable=True,
                    )
                raise ApplicationError(
                    f"the probe message {queue_id} was {status} by Postfix: {answer}", type="ProbeNotRelayed",
                    non_retryable=True,
                )  # fmt: skip
            reason = await self._delay_reason(queue_id)
            if reason:
                raise ApplicationError(
                    f"the probe message {queue_id} was deferred by Postfix: {reason}",
                    type="ProbeNotRelayed",
                    non_retryable=True,
                )
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"the probe message {queue_id} did not reach the relay within "
                    f"{self.agent.postfix_probe_wait:g} s (no delivery in {log.path})",
                    type="ProbeNotRelayed",
                    non_retryable=True,
                )
            await asyncio.sleep(1)

    async def _submit(self, message: EmailMessage) -> str:
        """The local Postfix's queue id for the message, from its answer to DATA."""
        port = self.agent.postfix_smtp_port
        try:
            _, answer = await aiosmtplib.send(
                message, hostname="127.0.0.1", port=port, start_tls=False, timeout=SMTP_TIMEOUT
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise ApplicationError(
                f"the local Postfix at 127.0.0.1:{port} refused the probe message: {exc.code} {exc.message}",
                type="ProbeRefused",
                non_retryable=True,
            ) from None
        if not (found := _QUEUED.search(answer)):
            raise ApplicationError(f"the local Postfix gave no queue id: {answer!r}", non_retryable=True)
        return found.group(1)

    async def _delay_reason(self, queue_id: str) -> str:
        """Why the queue holds the message back (`postqueue -j`), or ""."""
        command = [*self.agent.postqueue, "-c", self.agent.postfix_config_dir, "-j"]
        ran = await run(command)
        if ran.returncode != 0:
            raise ApplicationError(f"postqueue -j failed: {ran.message()}", non_retryable=True)
        for line in ran.out.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by the output limit
            if isinstance(entry, dict) and entry.get("queue_id") == queue_id:
                return "; ".join(
                    r.get("delay_reason", "") for r in entry.get("recipients", []) if r.get("delay_reason")
                )
        return ""


def probe_message(probe: MtaProbe) -> EmailMessage:
    message = EmailMessage()
    message["From"] = probe.mail_from
    message["To"] = probe.rcpt
    message["Subject"] = f"mailmove: probe {probe.probe_id} through the gateway's relay"
    message["Date"] = formatdate(localtime=True)
    # unique per submission (a retried attempt submits again), short enough not to be folded
    message["Message-ID"] = f"<{probe.probe_id}.{secrets.token_hex(4)}@{probe.mail_from.rpartition('@')[2]}>"
    message["X-Mailmove-Probe"] = probe.probe_id
    message.set_content(
        "This message was sent by mailmove through the local Postfix, to show that it relays through the\n"
        "central mail gateway. It needs no answer.\n"
    )
    return message


class MailLog:
    """Postfix's log from where it ended when the probe began (a rotated log: from its start)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = self._size()
        self.rest = b""

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def delivery(self, queue_id: str) -> tuple[str, str, str] | None:
        """(relay, status, answer) of the first delivery attempt logged for the message since."""
        if self._size() < self.offset:
            self.offset, self.rest = 0, b""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(LOG_CHUNK)
        except OSError:
            return None
        self.offset += len(chunk)
        lines = (self.rest + chunk).split(b"\n")
        self.rest = lines.pop()[-LOG_CHUNK:]
        pattern = re.compile(
            rf" {re.escape(queue_id)}: to=<[^>]*>, (?:orig_to=<[^>]*>, )?relay=([^,]+), .*?status=(\w+) \((.*)\)$"
        )
        for line in lines:
            if found := pattern.search(line.decode(errors="replace")):
                return found.group(1), found.group(2), found.group(3)
        return None
