"""The server move most tests make: chem's mail server from mail. to mx2.chem.sandbox.test at
127.0.0.2, as a request, as the API's fields and as the CLI's arguments."""

from __future__ import annotations

from mailmove.base.inputs import ServerMoveRequest
from mailmove.sandbox.world import Sandbox

OLD, NEW = "mail.chem.sandbox.test", "mx2.chem.sandbox.test"


# the move as the API's JSON fields, without a host agent
SERVER = {
    "old": OLD,
    "new": NEW,
    "new_ipv4": "127.0.0.2",
    "institution": "Chemistry",
    "admins": ["ab12cdef", "xy34ghij"],
    "contact": "postmaster@chem.sandbox.test",
    "sender_domains": ["chem.sandbox.test"],
    "agent": False,
}


def request(**overrides) -> ServerMoveRequest:
    fields = {**SERVER, "agent": True, "rcpt": "someone@example.org", "actor": "alice"}
    return ServerMoveRequest(**{**fields, **overrides})


# the move as `mailmove server start`'s arguments, without a host agent
GOOD = [
    "--old", OLD, "--new", NEW, "--new-ipv4", "127.0.0.2", "--institution", "Chemistry",
    "--admin", "ab12cdef", "--admin", "xy34ghij", "--contact", "postmaster@chem.sandbox.test",
    "--sender-domain", "chem.sandbox.test", "--no-agent",
]  # fmt: skip
# `mailmove relay-test`'s arguments for the new server
RELAY_ARGS = ["--helo", NEW, "--mail-from", "postmaster@chem.sandbox.test", "--rcpt", "someone@example.org"]


def without(option: str, args: list[str] = GOOD) -> list[str]:
    """GOOD with every occurrence of `option` and its value left out."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        else:
            out.append(arg)
    return out


def replaced(option: str, value: str) -> list[str]:
    """GOOD with `option` given `value` instead."""
    return without(option) + [option, value]


def filings(world: Sandbox) -> list[tuple[str, str, str]]:
    """What the portal stand-in holds: (kind, subject, IPv4 address) of each request filed."""
    return [
        (f.filing.kind, f.filing.subject, f.filing.values.get("ipv4", "")) for f in world.registry.requests.values()
    ]
