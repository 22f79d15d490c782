"""A wave from a CSV file: every row validated before anything starts, then one parent workflow.

One row a move. A domain row has `domain` and `legacy_mx`, and may have `dns`, `portal`,
`legacy_preference`, `addresses` (a file, relative to the CSV) or `no_external`, `contact`; a server row
has `kind` = server, `old`, `new`, `new_ipv4` and the TrustedServerList entry (`institution`,
`admins`, `contact`, `sender_domains`), and may have the options of `server start`. Cells
with several values (`admins`, `sender_domains`) separate them by spaces. A bad row stops the
whole wave: every bad row is listed, `FILE:LINE: field: why`, and nothing starts.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.converter import AdvancedJSONEncoder
from temporalio.service import RPCError, RPCStatusCode

from mailmove.base import ids
from mailmove.base.addresses import MAX_ADDRESSES
from mailmove.base.config import Settings
from mailmove.base.errors import BadInput, ConfigError, Conflict, NotFound
from mailmove.base.inputs import (
    DomainMoveRequest,
    ServerMoveRequest,
    check_reachable,
    domain_move_input,
    server_move_input,
)
from mailmove.base.model import WaveInput, WaveRow, WaveStatus
from mailmove.base.vocabulary import ENDED, DnsMode, Kind, RelayScope, RowState
from mailmove.service.control import jsonable, start_once
from mailmove.store.db import ready
from mailmove.store.models import Migration as StoredMigration
from mailmove.store.records import save_wave_rows
from workflows.wave import WaveWorkflow

DOMAIN_COLUMNS = {
    "kind", "domain", "legacy_mx", "dns", "portal", "legacy_preference", "addresses", "no_external", "contact",
}  # fmt: skip
SERVER_COLUMNS = {
    "kind", "old", "new", "new_ipv4", "new_ipv6", "relay_scope", "institution", "admins", "contact",
    "sender_domains", "mail_from", "rcpt", "send", "agent", "configure_mta", "portal",
}  # fmt: skip
# Rows a wave may hold: its workflow records about 11 history events a row (child start, its
# end, the pacing timer, workflow tasks) and Temporal ends a history at 51,200 events; its
# status (every row's progress, ~200 bytes) stays far below the 2 MB a query may answer.
MAX_ROWS = 2000
# Whitelist addresses in all of a wave's rows: the workflow reads its rows 100 at a time, one
# activity result each, which must stay under Temporal's 2 MB (~45 bytes an address).
MAX_WAVE_ADDRESSES = 4 * MAX_ADDRESSES
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|min|h|hour))?\s*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_rate(text: str) -> float:
    """Starts a minute from `30/min`, `0.5/s`, `100/h` or a bare number (a minute)."""
    match = _RATE.match(text)
    per = {"s": 60, "sec": 60, "h": 1 / 60, "hour": 1 / 60}.get(match.group(2) or "min", 1) if match else 0
    per_minute = float(match.group(1)) * per if match else 0.0
    if not 1 / 1440 <= per_minute <= 60_000:  # one a day to 1000/s: the pace between starts is a timer
        raise BadInput("--rate", f"{text!r} is not a rate from one a day to 1000/s, such as 30/min, 1/s or 100/h")
    return per_minute


def _flag(cells: dict[str, str], column: str, default: bool) -> bool:
    value = cells.get(column, "").strip().lower()
    if not value:
        return default
    if value in ("yes", "true", "1", "y"):
        return True
    if value in ("no", "false", "0", "n"):
        return False
    raise BadInput(column, f"{value!r} is not yes or no")


def _row(settings: Settings, cells: dict[str, str], base: Path, line: int, actor: str) -> WaveRow:
    kind = cells.get("kind", "").strip().lower() or Kind.DOMAIN
    if kind == Kind.DOMAIN:
        unknown = {c for c, v in cells.items() if v.strip()} - DOMAIN_COLUMNS
        if unknown:
            raise BadInput(sorted(unknown)[0], "belongs to a server row (kind = server)")
        preference = cells.get("legacy_preference", "").strip()
        if preference and not (preference.isascii() and preference.isdigit() and len(preference) <= 5):
            raise BadInput("legacy_preference", f"{preference!r} is not a whole number from 0 to 65535")
        addresses = cells.get("addresses", "").strip()
        move = domain_move_input(
            settings,
            DomainMoveRequest(
                domain=cells.get("domain", ""),
                legacy_mx=cells.get("legacy_mx", ""),
                dns_mode=cells.get("dns", "").strip() or DnsMode.RFC2136,
                portal_mode=cells.get("portal", "").strip(),
                legacy_preference=int(preference) if preference else None,
                actor=actor,
                addresses_file=str(base / addresses) if addresses else "",
                no_external=_flag(cells, "no_external", False),
                contact=cells.get("contact", "").strip(),
            ),
        )
        return WaveRow(line, Kind.DOMAIN, move.domain, ids.workflow_id(Kind.DOMAIN, move.domain), domain_move=move)
    if kind == Kind.SERVER:
        unknown = {c for c, v in cells.items() if v.strip()} - SERVER_COLUMNS
        if unknown:
            raise BadInput(sorted(unknown)[0], "belongs to a domain row")
        move = server_move_input(
            settings,
            ServerMoveRequest(
                old=cells.get("old", ""),
                new=cells.get("new", ""),
                new_ipv4=cells.get("new_ipv4", ""),
                new_ipv6=cells.get("new_ipv6", "").strip(),
                relay_scope=cells.get("relay_scope", "").strip() or RelayScope.EXTERNAL,
                institution=cells.get("institution", "").strip(),
                admins=cells.get("admins", "").split(),
                contact=cells.get("contact", "").strip(),
                sender_domains=cells.get("sender_domains", "").split(),
                mail_from=cells.get("mail_from", "").strip(),
                rcpt=cells.get("rcpt", "").strip(),
                send=_flag(cells, "send", False),
                agent=_flag(cells, "agent", True),
                configure_mta=_flag(cells, "configure_mta", False),
                portal_mode=cells.get("portal", "").strip(),
                actor=actor,
            ),
        )
        wid = ids.workflow_id(Kind.SERVER, move.new_fqdn)
        return WaveRow(line, Kind.SERVER, move.new_fqdn, wid, server_move=move)
    raise BadInput("kind", f"{kind!r} is neither domain nor server")


@dataclass
class PreparedWave:
    """Every row validated; nothing started yet."""

    name: str
    rows: list[WaveRow]
    concurrency: int
    rate: float  # starts a minute
    requested_by: str = ""


async def prepare_wave(
    settings: Settings, path: Path, concurrency: int, rate: str, name: str = "", actor: str = ""
) -> PreparedWave:
    """The validated wave; a BadInput lists every bad row. Nothing is started."""
    name = name or path.stem
    if not _NAME.match(name):
        raise BadInput("--name", f"{name!r}: letters, digits, '.', '_' and '-' only")
    if not 1 <= concurrency <= 1000:
        raise BadInput("--concurrency", f"{concurrency} is not from 1 to 1000")
    per_minute = parse_rate(rate)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput("FILE", f"{path} cannot be read: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    try:  # a cell over csv's field limit (128 KiB) is an error of the file, not a crash
        columns = set(reader.fieldnames or [])
        records = [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        raise BadInput("FILE", f"{path.name}:{reader.line_num}: {exc}") from None
    if not columns:
        raise BadInput("FILE", f"{path} has no header row")
    if unknown := sorted(columns - DOMAIN_COLUMNS - SERVER_COLUMNS):
        raise BadInput("FILE", f"{path.name}:1: unknown column {unknown[0]!r}")
    if len(records) > MAX_ROWS:
        raise BadInput("rows", f"{path.name} has {len(records)} rows, more than the {MAX_ROWS} of a wave: split it")
    rows, errors = await asyncio.to_thread(_validated, settings, path, records, actor)  # CPU-bound: off the loop
    if (listed := sum(len(r.domain_move.addresses) for r in rows if r.domain_move)) > MAX_WAVE_ADDRESSES:
        raise BadInput(
            "addresses", f"the rows list {listed} addresses, more than the {MAX_WAVE_ADDRESSES} of a wave: split it"
        )
    stored = await asyncio.to_thread(_stored_rows, settings.database.url, [r.workflow_id for r in rows])
    moving = {wid for wid, row in stored.items() if row["state"] not in ENDED}
    errors += [
        f"{path.name}:{r.line}: {r.kind}: {r.subject} is already moving ({r.workflow_id})"
        for r in rows
        if r.workflow_id in moving
    ]
    if errors:
        raise BadInput("FILE", f"{len(errors)} bad row(s), nothing started:\n  " + "\n  ".join(errors))
    if not rows:
        raise BadInput("FILE", f"{path} has no rows")
    await _reachable(settings, rows)
    return PreparedWave(name, rows, concurrency, per_minute, actor)


def _validated(
    settings: Settings, path: Path, records: list[tuple[int, dict]], actor: str
) -> tuple[list[WaveRow], list[str]]:
    """The good rows, and a `FILE:LINE: field: why` for each bad one (a move listed twice, too)."""
    rows: list[WaveRow] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line, cells in records:
        cells = {k: v or "" for k, v in cells.items() if k}
        try:
            row = _row(settings, cells, path.parent, line, actor)
        except (BadInput, ConfigError) as exc:  # a TSIG key missing for this row's zone, too
            errors.append(f"{path.name}:{line}: {exc}")
            continue
        if row.workflow_id in seen:
            errors.append(f"{path.name}:{line}: {row.kind}: {row.subject} is on line {seen[row.workflow_id]} already")
            continue
        seen[row.workflow_id] = line
        rows.append(row)
    return rows, errors


async def _reachable(settings: Settings, rows: list[WaveRow]) -> None:
    """Every server the wave's moves will talk to answers: once per portal mode and zone."""
    targets: dict[tuple, tuple[str, str, str]] = {}
    for row in rows:
        move = row.domain_move
        if move is None:
            targets.setdefault((row.server_move.portal_mode,), (row.server_move.portal_mode, "", ""))
            continue
        zone = settings.dns.zone_for(move.domain)
        key = (move.portal_mode, zone.name if zone else move.domain, move.dns_mode)
        targets.setdefault(key, (move.portal_mode, move.domain, move.dns_mode))
    for portal_mode, domain, dns_mode in targets.values():
        await check_reachable(settings, portal_mode, domain, dns_mode)


def _store_rows(url: str, batch: str, wid: str, rows: list[WaveRow]) -> None:
    encoded = [(r.line, r.workflow_id, json.loads(json.dumps(r, cls=AdvancedJSONEncoder))) for r in rows]
    with ready(url).begin() as session:
        save_wave_rows(session, batch, wid, encoded)


async def start_wave(client: Client, settings: Settings, wave: PreparedWave) -> str:
    """The rows into the store under a new batch, then the wave's workflow, which reads them."""
    wid = ids.workflow_id(Kind.WAVE, wave.name)
    batch = uuid.uuid4().hex
    await asyncio.to_thread(_store_rows, settings.database.url, batch, wid, wave.rows)
    await start_once(
        client,
        settings,
        WaveWorkflow.run,
        WaveInput(wave.name, batch, len(wave.rows), wave.concurrency, wave.rate, wave.requested_by),
        wid,
        Conflict("--name", f"a wave {wave.name!r} is running; give another --name"),
    )
    return wid


@dataclass
class WaveView:
    """A wave's progress from its workflow, each running row's stage and state from the store."""

    status: WaveStatus
    stored: dict[str, dict]  # workflow id -> {stage, state, attention, updated_at}

    def only(self, sees: Callable[[str], bool]) -> WaveView:
        """The rows a person may see (an operator limited to their domains)."""
        rows = [r for r in self.status.rows if sees(r.subject)]
        loaded = bool(self.status.rows)  # before the workflow has read its rows, only the count is known
        status = replace(self.status, rows=rows, total=len(rows) if loaded else self.status.total)
        return WaveView(status, {k: v for k, v in self.stored.items() if k in {r.workflow_id for r in rows}})

    def finished_rows(self) -> int:
        return sum(r.state in (*ENDED, RowState.REFUSED) for r in self.status.rows)

    def json(self) -> dict:
        """What `wave show --json` prints and the API returns."""
        return jsonable(
            {
                "id": ids.workflow_id(Kind.WAVE, self.status.name),
                "status": self.status,
                "counts": self.status.counts(),
                "finished_rows": self.finished_rows(),
                "stored": self.stored,
                "attention": [dict(zip(("line", "id", "stage", "state"), a, strict=True)) for a in self.attention()],
            }
        )

    def attention(self) -> list[tuple[int, str, str, str]]:
        """(line, id, stage, state) of the rows that need a person."""
        return [
            (row.line, row.workflow_id, self.stored[row.workflow_id]["stage"], self.stored[row.workflow_id]["state"])
            for row in self.status.rows
            if row.workflow_id in self.stored and self.stored[row.workflow_id]["attention"]
        ]


def _stored_rows(url: str, workflow_ids: list[str]) -> dict[str, dict]:
    """Each known move's stage, state and attention from the store (the read model)."""
    with ready(url)() as session:
        found = session.query(StoredMigration).filter(StoredMigration.workflow_id.in_(workflow_ids)).all()
        return {
            m.workflow_id: {"stage": m.stage, "state": m.state, "attention": m.attention, "updated_at": m.updated_at}
            for m in found
        }


async def show_wave(client: Client, settings: Settings, text: str) -> WaveView:
    wid = text if ids.parse(text)[0] == Kind.WAVE else ids.workflow_id(Kind.WAVE, text)
    try:
        status = await client.get_workflow_handle(wid).query(WaveWorkflow.status)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise NotFound("ID", f"no wave {wid}") from None
    started = [r.workflow_id for r in status.rows if r.state != RowState.PENDING]
    return WaveView(status, await asyncio.to_thread(_stored_rows, settings.database.url, started))


async def list_waves(client: Client, sees: Callable[[str], bool] | None = None) -> list[dict]:
    """Every wave Temporal still holds (the latest run of each name), newest first; with `sees`
    (a person limited to some domains), only the waves that hold a row they may see."""
    latest: dict[str, dict] = {}
    async for w in client.list_workflows("WorkflowType = 'WaveWorkflow'"):
        if w.id not in latest or w.start_time > latest[w.id]["started"]:
            status = w.status.name if w.status else ""
            latest[w.id] = {
                "id": w.id,
                "name": ids.parse(w.id)[1],
                "status": status,
                "started": w.start_time,
            }
    found = sorted(latest.values(), key=lambda w: w["started"], reverse=True)
    if sees is None:
        return found
    holds = await asyncio.gather(*(_holds(client, w["id"], sees) for w in found))
    return [w for w, held in zip(found, holds, strict=True) if held]


async def _holds(client: Client, wid: str, sees: Callable[[str], bool]) -> bool:
    """Whether the wave's latest run holds a row `sees` admits, by the rows its status names (as
    its page shows them); a wave that does not answer is not shown."""
    try:
        status = await client.get_workflow_handle(wid).query(WaveWorkflow.status, rpc_timeout=timedelta(seconds=10))
    except (RPCError, WorkflowQueryFailedError):
        return False
    return any(sees(row.subject) for row in status.rows)
