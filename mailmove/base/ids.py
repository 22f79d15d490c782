"""Workflow ids: `domain-move:<domain>`, `server-move:<fqdn>`, `wave:<name>`.

The id names what the workflow is about, so Temporal refuses a second move of one subject
while the first runs, and a person can type it; the store keys a move's rows by it.
"""

import re

from mailmove.base.vocabulary import Kind

PREFIXES = {Kind.DOMAIN: "domain-move:", Kind.SERVER: "server-move:", Kind.WAVE: "wave:"}


def workflow_id(kind: Kind, subject: str) -> str:
    """The id of the move of `subject` (a domain, a new server's FQDN), or of the wave so named."""
    return PREFIXES[kind] + subject


def parse(text: str) -> tuple[Kind | None, str]:
    """(kind, subject) of a workflow id; (None, text) for a text without a known prefix."""
    for kind, prefix in PREFIXES.items():
        if text.startswith(prefix):
            return kind, text.removeprefix(prefix)
    return None, text


GUARD_PREFIX = "guard:"


def guard_id(move_id: str) -> str:
    """The id of the Schedule that guards a finished move, `guard:<move's workflow id>`; the
    runs it starts are named after it (Temporal appends the time)."""
    return GUARD_PREFIX + move_id


def guarded(guard_run_id: str) -> str:
    """The move's workflow id of a guard's schedule id, or of a run it started (`-<time>` appended)."""
    return re.sub(r"-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", "", guard_run_id.removeprefix(GUARD_PREFIX))
