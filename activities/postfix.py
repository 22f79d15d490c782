"""The MTA's own setting for the chosen relay: the Postfix lines, and a check of them with
`postconf` on the host agent's machine (a mismatch is a warning with the lines to set)."""

from __future__ import annotations

import asyncio
import re

from temporalio import activity

from activities import agent_input
from activities.heartbeat import beating
from workflows.model import PostfixCheck, Relay

# any of these makes Postfix insist on TLS to the relay
TLS_REQUIRED = ("encrypt", "dane-only", "fingerprint", "verify", "secure")
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
# all that `postconf` is ever asked for: fixed names, never an argument's
PARAMETERS = ("relayhost", "smtp_tls_security_level", "smtp_tls_mandatory_protocols")


def postfix_lines(relay: Relay) -> dict[str, str]:
    """main.cf settings; brackets stop Postfix from looking up MX records for the relay."""
    port = "" if relay.port == 25 else f":{relay.port}"
    lines = {"relayhost": f"[{relay.host}]{port}"}
    if relay.tls:
        lines["smtp_tls_security_level"] = "encrypt"
        lines["smtp_tls_mandatory_protocols"] = ">=TLSv1.2"
    return lines


def _relayhost(value: str) -> tuple[str, int]:
    """`[host]:port`, `[host]`, `host:port` or `host` as (host, port)."""
    text, port = value.strip(), "25"
    if text.startswith("["):
        text, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "25"
    elif ":" in text:
        text, _, port = text.rpartition(":")
    return text.rstrip(".").lower(), int(port) if re.fullmatch(r"[0-9]{1,5}", port) else -1  # not '²': int() refuses it


def _excludes_old(value: str) -> bool:
    """`>=TLSv1.2` (Postfix 3.6+) or an exclusion list such as `!SSLv2, !SSLv3, !TLSv1, !TLSv1.1`."""
    text = value.replace(",", " ").split()
    if any(t in (">=TLSv1.2", ">=TLSv1.3") for t in text):
        return True
    return all(f"!{p}" in text for p in OLD_PROTOCOLS)


def mismatches(relay: Relay, actual: dict[str, str]) -> list[str]:
    """The lines to set, for each setting that does not do what the relay needs."""
    expected = postfix_lines(relay)
    wrong = []
    if _relayhost(actual.get("relayhost", "")) != (relay.host.lower(), relay.port):
        wrong.append(f"relayhost = {expected['relayhost']}")
    if relay.tls:
        if actual.get("smtp_tls_security_level", "") not in TLS_REQUIRED:
            wrong.append(f"smtp_tls_security_level = {expected['smtp_tls_security_level']}")
        if not _excludes_old(actual.get("smtp_tls_mandatory_protocols", "")):
            wrong.append(f"smtp_tls_mandatory_protocols = {expected['smtp_tls_mandatory_protocols']}")
    return wrong


class PostfixActivities:
    """Runs on the host agent; `postconf` may be a command with options (`postconf -c DIR`)."""

    def __init__(self, postconf: tuple[str, ...] = ("postconf",)):
        self.postconf = postconf

    @activity.defn
    @beating
    async def check_postfix(self, relay: Relay) -> PostfixCheck:
        with agent_input.refusing("check_postfix"):
            agent_input.relay("relay", relay)
        expected = postfix_lines(relay)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.postconf, *PARAMETERS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError:
            return PostfixCheck(expected, {}, [], note=f"{self.postconf[0]} not found: Postfix was not checked")
        out, err = await process.communicate()
        if process.returncode != 0:
            return PostfixCheck(expected, {}, [], note=f"postconf failed: {err.decode().strip()}")
        actual = {}
        for line in out.decode().splitlines():
            name, _, value = line.partition("=")
            actual[name.strip()] = value.strip()
        return PostfixCheck(expected, actual, mismatches(relay, actual))
