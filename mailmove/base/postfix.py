"""Postfix's lines for a relay, and the planning of a change to them: what the host agent reads
with `postconf`, sets with `postconf -e`, removes with `postconf -X` and records to restore.

Pure functions of text and wire types: the workflow shows the lines, the agent runs the plan
(activities/postfix.py), and `postconf`'s own output is parsed here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailmove.base.model import Relay

# any of these makes Postfix insist on TLS to the relay
TLS_REQUIRED = ("encrypt", "dane-only", "fingerprint", "verify", "secure")
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
# all that `postconf` is asked for by the check: fixed names, never an argument's
PARAMETERS = ("relayhost", "smtp_tls_security_level", "smtp_tls_mandatory_protocols")
# all that the agent ever sets (its relay change), and records beforehand to restore
SETTABLE = (*PARAMETERS, "smtp_tls_CAfile")
# the unsecure relay speaks no TLS: opportunistic, so that an earlier `encrypt` does not block it
PLAIN_LEVEL = "may"

# main.cf's explicit values of SETTABLE; None: not set in main.cf (Postfix's default applies)
Values = dict[str, str | None]


def postfix_lines(relay: Relay) -> dict[str, str]:
    """main.cf settings; brackets stop Postfix from looking up MX records for the relay."""
    port = "" if relay.port == 25 else f":{relay.port}"
    lines = {"relayhost": f"[{relay.host}]{port}"}
    if relay.tls:
        lines["smtp_tls_security_level"] = "encrypt"
        lines["smtp_tls_mandatory_protocols"] = ">=TLSv1.2"
    return lines


def relay_settings(relay: Relay, ca_file: str = "") -> dict[str, str]:
    """What the agent's relay change sets for the relay: its lines, the plain level for a relay without
    TLS, and the CA file (from the agent's configuration) for one with."""
    lines = postfix_lines(relay)
    if not relay.tls:
        lines["smtp_tls_security_level"] = PLAIN_LEVEL
    elif ca_file:
        lines["smtp_tls_CAfile"] = ca_file
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


def parse_postconf(text: str) -> dict[str, str]:
    """`name = value` lines, as `postconf` and `postconf -n` print them."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    return values


def explicit(text: str) -> Values:
    """SETTABLE from `postconf -n` (main.cf's own settings): None for each one not set there."""
    found = parse_postconf(text)
    return {name: found.get(name) for name in SETTABLE}


def edits(current: Values, target: Values) -> tuple[list[str], list[str]]:
    """`postconf -e` arguments (`name=value`) and `postconf -X` names that make main.cf's
    `current` values `target`'s (None: removed, Postfix's default applies); names not in
    `target` are left alone."""
    to_set = [f"{name}={value}" for name, value in target.items() if value is not None and current.get(name) != value]
    to_remove = [name for name, value in target.items() if value is None and current.get(name) is not None]
    return to_set, to_remove


def restoration(record: Values, current: Values, applied: dict[str, str]) -> tuple[Values, list[str]]:
    """What restoring `record` sets, and the names left alone: a value that is no longer the
    one mailmove `applied` was changed since by someone, and stays. A name mailmove did not
    set is none of its business."""
    target: Values = {}
    left = []
    for name, before in record.items():
        if name not in applied:
            continue
        if current.get(name) == applied[name]:
            target[name] = before
        else:
            left.append(name)
    return target, left


_LOGGED_RELAY = re.compile(r"([^\[\]\s]+)\[([^\[\]\s]*)\]:([0-9]{1,5})")


def relayed_through(logged: str, relays: Sequence[Relay]) -> Relay | None:
    """The relay of `relays` that Postfix's log names as the one a message went to
    (`relay=NAME[ADDRESS]:PORT`), or None: `local`, `none` or any other server is not the gateway."""
    if not (found := _LOGGED_RELAY.fullmatch(logged)):
        return None
    name, address, port = found.group(1).rstrip(".").lower(), found.group(2).lower(), int(found.group(3))
    for relay in relays:
        if relay.port == port and relay.host.rstrip(".").lower() in (name, address):
            return relay
    return None


def shown(values: Values) -> str:
    """`name = value` lines joined, `name` (not set) for one not in main.cf."""
    return "; ".join(
        f"{name} = {value}" if value is not None else f"{name} (not set)" for name, value in values.items()
    )
