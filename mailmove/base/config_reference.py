"""docs/configuration.md, written from the settings dataclasses so that it cannot drift from them:
every table and key with its type, default and purpose. `python -m mailmove.base.config_reference`
writes it; tests/test_config.py fails while the file and the dataclasses disagree. The words are
the dataclasses' docstrings and `setting()` texts in mailmove/base/config.py: change them there."""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, get_args, get_origin

from mailmove.base.config import HostPort, Key, Settings, keys_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

INTRO = """\
# Configuration

<!-- Written by `python -m mailmove.base.config_reference` from mailmove/base/config.py: edit the
words there, not here (tests/test_config.py compares the two). -->

One TOML file, `--config FILE` or `$MAILMOVE_CONFIG`; without one, the defaults below (the
TU Darmstadt profile) with `var/` in the current directory. Relative paths are relative to
the file. An unknown key or a value of the wrong kind is an error naming the dotted key
(`dashboard.login_token_ttl: '0s' is no time at all: ...`): `mailmove` exits 2 with it, before
anything starts.

Over the file, environment variables `MAILMOVE_<SECTION>_<KEY>` set one key each
(`MAILMOVE_DATABASE_URL`, `MAILMOVE_TEMPORAL_ADDRESS`,
`MAILMOVE_DNS_ZONES='{ "chem.example.org" = { authoritative = ["10.0.0.53"] } }'`, ...): a
value is read as TOML when it is one (numbers, booleans, arrays, inline tables), else as text.

Secrets are referenced, never copied: the keys marked *secret* name a file or an environment
variable, read by the process that needs it when it needs it (the worker reads the TSIG key from
`dns.tsig_keyfile` and the portal token from `portal.credentials_*`; the Temporal client
certificate's key, the API key and the payload keys are files too; PostgreSQL's password goes
through libpq's `PGPASSFILE`). Workflow inputs and history carry only names, and every payload
is encrypted; the gateway profile and the timings in force when a move starts are part of its
input, so a later change of the file does not alter a running move.

How values are written:

- **duration**: seconds, or text such as `90s`, `15m`, `1h30m`, `14d` (units `ms`, `s`, `m`,
  `h`, `d`, `w`), at most a century.
- **host[:port]**: `host`, `host:port`, `[2001:db8::1]:port` or a bare IPv6 address; without a
  port, the one the key names.
- **size**: bytes, or `512k`, `1M`, `1 MiB` (k, M and G are powers of 1024).
- **network**: an address or a network exactly as Python's `ipaddress` reads it (no host bits
  beyond the prefix): `130.83.156.224/27`, `2001:db8::/32`.
- **path**: relative to the file.
"""


def kind(hint: Any, key: Key) -> str:
    """What a value of `hint`, read as `key` says, is called in the reference."""
    text = key.kind or _kind(hint, key)
    return f"{text}, *secret*" if key.secret else text


def _kind(hint: Any, key: Key) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is types.UnionType:
        return _kind(args[0], key)
    if origin is dict:
        return f"table: name = {_kind(args[1], key)}"
    if origin is tuple and args[0] is str:
        return "list of paths" if key.resolve else "list of text"
    if origin is tuple:
        return f"list of {_kind(args[0], key)}" if args[0] is HostPort else "tables by name"
    if hint is str:
        return " or ".join(f"`{c}`" for c in key.choices) or ("path" if key.resolve else "text")
    if hint is int:
        return f"whole number, {key.low} to {key.high}"
    if hint is HostPort:
        return f"host[:port], port {key.port}"
    return {float: "duration", bool: "true or false"}[hint]


def shown(value: Any, hint: Any, key: Key) -> str:
    """`value` as TOML, the way the file would hold it (`""` for none, which an empty value means)."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {shown(v, get_args(hint)[1], key)}" for k, v in value.items()) + "}"
    if _named(hint):  # none by default
        return "{}"
    if isinstance(value, tuple):
        return "[" + ", ".join(shown(v, get_args(hint)[0], key) for v in value) + "]"
    if isinstance(value, float) and "duration" in kind(hint, key):
        return json.dumps(_duration(value))
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(str(value))


def _named(hint: Any) -> bool:
    return get_origin(hint) is tuple and get_args(hint)[0] not in (str, HostPort)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def rows(cls: type) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default as TOML, what it is for) for every key of the table `cls`."""
    for name, (hint, key) in keys_of(cls).items():
        if not key.doc:
            raise ValueError(f"{cls.__name__}.{name} says nothing of what it is for: give it words in setting()")
        default = _default(cls, name)
        yield name, kind(hint, key), shown(default, hint, key), key.doc


def _default(cls: type, name: str) -> Any:
    field = next(f for f in fields(cls) if f.name == name)
    return field.default if field.default_factory is MISSING else field.default_factory()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(title: str, cls: type) -> list[str]:
    lines = [f"## `{title}`", "", inspect.cleandoc(cls.__doc__ or ""), ""]
    lines += ["| key | type | default | what it is for |", "| --- | --- | --- | --- |"]
    lines += [f"| `{n}` | {_cell(k)} | `{_cell(d)}` | {_cell(w)} |" for n, k, d, w in rows(cls)]
    return [*lines, ""]


def reference() -> str:
    """The text of docs/configuration.md."""
    lines = [INTRO]
    for section, (hint, _) in keys_of(Settings).items():
        lines += _table(f"[{section}]", hint)
        for name, (inner, _) in keys_of(hint).items():
            if _named(inner):
                lines += _table(f'[{section}.{name}."NAME"]', get_args(inner)[0])
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    DOC.write_text(reference())
    print(f"wrote {DOC}")
