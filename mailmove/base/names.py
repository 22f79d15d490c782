"""Host and domain names as typed by people, turned into the A-labels DNS carries.

IDNA 2008 with UTS #46 mapping (the `idna` package), then the RFC 1035/1123 limits that the
encoder itself does not enforce for ASCII input.
"""

from __future__ import annotations

import ipaddress
import re

import idna

_LDH = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class BadName(ValueError):
    """The name is not usable; the message says why in terms a postmaster can act on."""


def to_alabel(text: str) -> str:
    """Lower-case A-label form of a host name, without the trailing dot."""
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise BadName("is empty")
    if any(c.isspace() for c in name) or "@" in name or "/" in name:
        raise BadName(f"{text!r} is not a host name (no spaces, '@' or '/')")
    for label in name.split("."):
        if not label:
            raise BadName(f"{text!r} has an empty label")
        if label.isascii() and len(label.encode()) > 63:
            raise BadName(f"label {label[:20]!r}... is {len(label)} octets, more than 63")
    try:
        alabel = ".".join(_encode_label(label) for label in name.split("."))
    except idna.IDNAError as exc:
        raise BadName(f"{text!r} does not encode as an internationalised name: {exc}") from None
    labels = alabel.split(".")
    for label in labels:
        if len(label) > 63:
            raise BadName(f"label {label[:20]!r}... is {len(label)} octets, more than 63")
        if not _LDH.fullmatch(label):
            raise BadName(f"{text!r} is not a host name: label {label!r} may hold only letters, digits and '-'")
    if len(alabel) > 253:
        raise BadName(f"{text!r} is {len(alabel)} octets, more than 253")
    if len(labels) < 2:
        raise BadName(f"{text!r} is not fully qualified (write it with its domain)")
    if labels[-1].isdigit():
        raise BadName(f"{text!r} is an address, not a host name")
    return alabel


def _encode_label(label: str) -> str:
    """ASCII labels are plain LDH (RFC 1123); only U-labels and `xn--` labels follow IDNA."""
    lower = label.lower()
    if not label.isascii():
        return idna.encode(label, uts46=True).decode("ascii")
    if lower.startswith("xn--"):
        idna.decode(lower)  # raises on an invalid A-label
    return lower


def to_ulabel(alabel: str) -> str:
    """The form people read; A-label if it does not decode."""
    try:
        return idna.decode(alabel)
    except idna.IDNAError:
        return alabel


def is_address(text: str) -> bool:
    """An IPv4 or IPv6 address literal, rather than a name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
