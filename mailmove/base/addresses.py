"""A domain's externally reachable addresses, read from a file the postmaster already has: one
address per line, or a Postfix virtual(5) or aliases(5) map, whose left-hand sides are read.

Postfix's own syntax: a line starting with `#` (after blanks) is a comment, a line starting
with a blank continues the previous one, an alias key ends in `:`. A virtual catch-all
(`@domain`) cannot go on the Whitelist: it is reported, since only the listed addresses will
reach the domain from outside. Every address is checked with email-validator (no DNS) and
must belong to the domain; every bad line is reported with its number, and then nothing starts.

A text is measured before it is parsed: its size, its number of entries and the length of each
logical line are bounded, and an entry longer than an address is refused unchecked (email-validator
takes time quadratic in the length), so that no list holds a thread for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from mailmove.base.errors import BadInput
from mailmove.base.names import BadName, to_alabel

# Entries a list may hold. The move carries its list in Temporal payloads, each of which must stay
# under Temporal's 2 MB limit: the workflow input (~45 bytes an address), and the gateway probe's
# report and the move's status, each address with its state and the gateway's reply (~200 bytes).
# 5,000 keeps the largest near 1 MB.
MAX_ADDRESSES = 5000
MAX_TEXT = MAX_ADDRESSES * 300  # characters of a list: its entries with their comments and alias targets
MAX_LINE = 16 * 1024  # characters of a logical line: an aliases(5) entry naming a few hundred targets
MAX_ADDRESS = 254  # characters of an address: RFC 5321's path of 256 without its angle brackets


@dataclass
class AddressList:
    addresses: list[str] = field(default_factory=list)  # ASCII (A-label) form, in file order, once each
    internal: list[str] = field(default_factory=list)  # listed as internal-only: no Whitelist entry
    duplicates: list[str] = field(default_factory=list)
    catch_alls: list[str] = field(default_factory=list)  # `@domain` keys: not whitelistable
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: why"


def logical_lines(text: str, name: str = "addresses") -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments dropped, continuations joined.
    A BadInput on `addresses` (`name` says where) for a text beyond MAX_TEXT, MAX_LINE or
    MAX_ADDRESSES, found before a line is used: the web form's and the API's text is read for
    its domains with this, before it is validated."""
    if len(text) > MAX_TEXT:
        raise BadInput("addresses", f"{name}: more than the {MAX_TEXT} characters a list may hold")
    lines: list[tuple[int, list[str]]] = []
    length = 0  # of the logical line being joined
    for number, raw in enumerate(text.splitlines(), start=1):
        part = raw.strip()
        if not part or part.startswith("#"):
            continue
        if raw[0] in " \t" and lines:
            lines[-1][1].append(part)
            length += 1 + len(part)
        else:
            lines.append((number, [part]))
            length = len(part)
        if length > MAX_LINE:
            raise BadInput(
                "addresses",
                f"{name}:{lines[-1][0]}: a logical line of more than {MAX_LINE} characters "
                "(a line starting with a blank continues the one before)",
            )
    if len(lines) > MAX_ADDRESSES:
        raise BadInput("addresses", f"{name}: {len(lines)} entries, more than the {MAX_ADDRESSES} a move may list")
    return [(number, " ".join(parts)) for number, parts in lines]


def _key(line: str, domain: str) -> tuple[str, bool]:
    """The left-hand side of a line as an address, and whether the line marks it internal-only."""
    head = line.split(None, 1)
    first, rest = head[0], (head[1] if len(head) > 1 else "")
    if ":" in first:  # aliases(5): `name: targets` (a virtual or plain key holds no colon)
        local = first.split(":", 1)[0]
        return (local if "@" in local else f"{local}@{domain}"), False
    return first, rest.strip().lower() == "internal"  # a plain list may say `root@domain internal`


def read_addresses(path: Path, domain: str, internal_only: tuple[str, ...] = ("root",)) -> AddressList:
    """The addresses of `domain` in the file at `path` (see `parse_addresses`); of a larger file,
    only as much as shows that it is too large is read."""
    try:
        with path.open() as file:
            text = file.read(MAX_TEXT + 1)
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the name (a wave's cell)
        return AddressList(errors=[f"{str(path)!r}: cannot be read: {exc}"])
    return parse_addresses(text, path.name, domain, internal_only)


def listed_domains(text: str, domain: str) -> set[str]:
    """The domain part of every entry of `text` as written, nothing checked: what an operator's
    domains are compared with before the list is validated. A BadInput for a text beyond the
    limits (see `logical_lines`)."""
    keys = (_key(line, domain)[0] for _, line in logical_lines(text))
    return {key.rpartition("@")[2] for key in keys if "@" in key}


def parse_addresses(text: str, name: str, domain: str, internal_only: tuple[str, ...] = ("root",)) -> AddressList:
    """The addresses of `domain` in `text`; local parts in `internal_only` need no entry. A text
    beyond the limits of `logical_lines` is one error, found before any entry is checked."""
    result = AddressList()
    domain = to_alabel(domain)
    seen: set[str] = set()
    try:
        lines = logical_lines(text, name)
    except BadInput as exc:
        return AddressList(errors=[exc.message])
    for number, line in lines:
        where = f"{name}:{number}"
        key, internal = _key(line, domain)
        if len(key) > MAX_ADDRESS:
            result.errors.append(f"{where}: {key[:40]!r}…: longer than the {MAX_ADDRESS} characters of an address")
            continue
        if key.startswith("@"):
            result.catch_alls.append(key)
            continue
        try:
            checked = validate_email(key, check_deliverability=False, test_environment=True)
        except EmailNotValidError as exc:
            result.errors.append(f"{where}: {key!r}: {exc}")
            continue
        try:
            address_domain = to_alabel(checked.domain)
        except BadName as exc:
            result.errors.append(f"{where}: {key!r}: {exc}")
            continue
        if address_domain != domain and not address_domain.endswith("." + domain):
            result.errors.append(f"{where}: {key!r} is not an address of {domain}")
            continue
        if not checked.local_part.isascii():
            result.errors.append(f"{where}: {key!r}: the gateway needs an ASCII local part (no SMTPUTF8)")
            continue
        address = f"{checked.local_part}@{address_domain}"
        if address.lower() in seen:
            result.duplicates.append(address)
            continue
        seen.add(address.lower())
        if internal or checked.local_part.lower() in {n.lower() for n in internal_only}:
            result.internal.append(address)
        else:
            result.addresses.append(address)
    return result
