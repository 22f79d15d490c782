"""Starting migrations and acting on them through Temporal; reads merge Temporal and the store.

Shared by the CLI and the dashboard, so both validate and act the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from mailmove.base import hints, ids, search
from mailmove.base.addresses import MAX_ADDRESSES
from mailmove.base.config import Settings
from mailmove.base.errors import BadInput, Conflict, NotFound, conflict_of
from mailmove.base.inputs import (
    NOTE_LIMIT,
    DomainMoveRequest,
    ServerMoveRequest,
    address_field,
    check_reachable,
    domain_move_input,
    name_field,
    server_move_input,
    text_field,
)
from mailmove.base.model import (
    CancelInput,
    ConfirmInput,
    DomainMoveInput,
    ExtendInput,
    MoveStatus,
    ServerMoveInput,
)
from mailmove.base.report import DomainCheckQuery, Report, ServerCheckQuery
from mailmove.base.vocabulary import MOVE_KINDS, AddressState, Kind, Request, RequestState
from mailmove.checks.dns import Dns
from mailmove.checks.domain import DomainChecks
from mailmove.checks.server import ServerChecks
from mailmove.store.db import ready
from mailmove.store.models import Migration as StoredMigration
from mailmove.store.records import audit_trail, check_reports, list_migrations, migration_row, portal_requests
from workflows import policy
from workflows.domain_move import DomainMoveWorkflow
from workflows.migration import Migration
from workflows.server_move import ServerMoveWorkflow

AGENT_POLLS_TIMEOUT = timedelta(seconds=5)  # a question for a hint, not worth a long wait


def workflow_id(text: str, settings: Settings | None = None) -> str:
    """`domain-move:<domain>`, `server-move:<fqdn>`, or a bare name: the domain move of that
    name, unless only a server move of that name is known (to the store of `settings`)."""
    kind, name = ids.parse(text)
    if kind in MOVE_KINDS:
        return ids.workflow_id(kind, name_field("ID", name))
    name = name_field("ID", text)
    domain, server = ids.workflow_id(Kind.DOMAIN, name), ids.workflow_id(Kind.SERVER, name)
    if settings is not None:
        with ready(settings.database.url)() as session:
            if session.get(StoredMigration, domain) is None and session.get(StoredMigration, server):
                return server
    return domain


def host_name(text: str) -> str:
    return name_field("host", text)


async def run_check(
    settings: Settings,
    domain: str | None,
    server: str | None,
    stage: str | None = None,
    legacy_mx: str | None = None,
    addresses: list[str] | None = None,
) -> Report:
    """`mailmove check`: one domain or one server, validated first (BadInput names the field)."""
    if bool(domain) == bool(server):
        raise BadInput("DOMAIN", "name a domain, or a server with --server, not both")
    dns = Dns(settings)
    if server:
        if stage or legacy_mx:
            raise BadInput("--stage", "a server has no stages; --stage and --legacy-mx belong to a domain")
        query = ServerCheckQuery(host_name(server), [address_field("--address", a) for a in addresses or []])
        return await ServerChecks(settings, dns).run(query)
    if addresses:
        raise BadInput("--address", "belongs to --server")
    legacy = name_field("--legacy-mx", legacy_mx) if legacy_mx else ""
    query = DomainCheckQuery(name_field("DOMAIN", domain), stage or "", legacy_mx=legacy)
    return await DomainChecks(settings, dns).run(query)


async def prepare_domain_move(settings: Settings, request: DomainMoveRequest) -> DomainMoveInput:
    """The validated workflow input; a BadInput or ConfigError names what is wrong. Nothing is started. The
    checks run in a thread: a list of thousands of addresses takes a while, and the dashboard
    and the worker of `mailmove up` share this event loop."""
    move = await asyncio.to_thread(domain_move_input, settings, request)
    await check_reachable(settings, move.portal_mode, move.domain, move.dns_mode)
    return move


async def prepare_server_move(settings: Settings, request: ServerMoveRequest) -> ServerMoveInput:
    """The validated workflow input; a BadInput or ConfigError names what is wrong. Nothing is started."""
    move = await asyncio.to_thread(server_move_input, settings, request)
    await check_reachable(settings, move.portal_mode)
    return move


async def start_domain_move(client: Client, settings: Settings, move: DomainMoveInput) -> str:
    return await _start(client, settings, DomainMoveWorkflow.run, move, Kind.DOMAIN, move.domain)


async def start_server_move(client: Client, settings: Settings, move: ServerMoveInput) -> str:
    return await _start(client, settings, ServerMoveWorkflow.run, move, Kind.SERVER, move.new_fqdn)


async def agent_polls(client: Client, settings: Settings, task_queue: str) -> bool:
    """Whether a host agent has polled its task queue lately (Temporal keeps pollers ~1 min).
    A question that fails (the server busy, the call cancelled) counts as not seen: it is only
    advice after a start that stands (seen in CI as "operation was canceled" on a loaded machine)."""
    try:
        description = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            ),
            timeout=AGENT_POLLS_TIMEOUT,
        )
    except RPCError:
        return False
    return bool(description.pollers)


async def _start(client: Client, settings: Settings, run: Any, move: Any, kind: Kind, subject: str) -> str:
    wid = ids.workflow_id(kind, subject)
    await start_once(
        client,
        settings,
        run,
        move,
        wid,
        Conflict("", f"{subject} is already moving ({wid}); see `{hints.show(wid)}`"),
        search_attributes=search.at_start(kind, subject),
        task_timeout=policy.MOVE_TASK_TIMEOUT,
    )
    return wid


async def start_once(
    client: Client, settings: Settings, run: Any, arg: Any, wid: str, conflict: Conflict, **options: Any
) -> None:
    """Start a workflow under its id, or raise `conflict` while one of that id runs: a start
    repeated (a double click, a command run twice) never makes a second move or wave."""
    try:
        await client.start_workflow(
            run,
            arg,
            id=wid,
            task_queue=settings.temporal.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            **options,
        )
    except WorkflowAlreadyStartedError:
        raise conflict from None


@dataclass
class Shown:
    """What `show` prints: the workflow's own status, enriched from Temporal and the store."""

    status: MoveStatus | None
    execution: str  # RUNNING, COMPLETED, FAILED, ... as Temporal sees it
    audit: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    reports: dict[str, Report] = field(default_factory=dict)  # stage -> the check report stored there

    def json(self, wid: str) -> dict[str, Any]:
        """What `show --json` prints and the API returns."""
        return jsonable(
            {
                "id": wid,
                "execution": self.execution,
                "status": self.status,
                "audit": self.audit,
                "note": self.note,
                "reports": {stage: report.to_json() for stage, report in self.reports.items()},
            }
        )


async def show(client: Client, settings: Settings, wid: str) -> Shown:
    handle = client.get_workflow_handle(wid)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        description = None
    audit, reports = await asyncio.to_thread(_stored, settings.database.url, wid)
    if description is None and not audit:
        raise NotFound("id", f"no migration {wid}")
    if description is None:
        note = "Temporal no longer holds this workflow: history from the database"
        return Shown(None, "UNKNOWN", audit, note, reports)
    execution = description.status.name if description.status else "UNKNOWN"
    try:
        status = await handle.query("status", result_type=MoveStatus, rpc_timeout=timedelta(seconds=10))
    except (TimeoutError, RPCError) as exc:
        note = f"no worker answered the status query ({exc}); is `mailmove up` running?"
        return Shown(None, execution, audit, note, reports)
    await _merge_pending(client, status, description.raw_description.pending_activities)
    return Shown(status, execution, audit, "", reports)


async def _merge_pending(client: Client, status: MoveStatus, pending: Any) -> None:
    """Activity retries write no history: attempts and the last failure come from describe
    (its message decoded: with encrypted payloads it travels in the encoded attributes)."""
    current = next((s for s in status.stages if s.name == status.stage), None)
    for activity in pending or []:
        if current is None:
            return
        current.attempts = max(current.attempts, activity.attempt)
        if activity.HasField("last_failure"):
            message = str(await client.data_converter.decode_failure(activity.last_failure))
            if message:
                current.last_error = f"{activity.activity_type.name}: {message}"


def _stored(url: str, wid: str) -> tuple[list[dict[str, Any]], dict[str, Report]]:
    """The move's audit trail and check reports, from the store."""
    with ready(url)() as session:
        audit = [
            {"at": e.at, "actor": e.actor, "action": e.action, "stage": e.stage, "detail": e.detail, "result": e.result}
            for e in audit_trail(session, wid)
        ]
        return audit, dict(check_reports(session, wid))


def migrations(settings: Settings, kind: str | None = None) -> list[dict[str, Any]]:
    with ready(settings.database.url)() as session:
        return [migration_row(m) for m in list_migrations(session, kind)]


async def _update(handle: WorkflowHandle, update: Any, arg: Any) -> str:
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise conflict_of(exc.cause) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound("id", f"no running migration {handle.id}") from None
        raise


def _noted(request: Any) -> Any:
    """The request with its note checked as free text (it goes to the audit history and the status)."""
    return dataclasses.replace(request, note=text_field("note", request.note, NOTE_LIMIT))


async def confirm(client: Client, wid: str, request: ConfirmInput) -> str:
    if len(request.lost) > MAX_ADDRESSES:
        raise BadInput("lost", f"{len(request.lost)} addresses given, at most {MAX_ADDRESSES} are listed")
    lost = list(dict.fromkeys(request.lost))  # once each: the move compares every one with its list
    return await _update(
        client.get_workflow_handle(wid), Migration.confirm, _noted(dataclasses.replace(request, lost=lost))
    )


async def extend(client: Client, wid: str, request: ExtendInput) -> str:
    return await _update(client.get_workflow_handle(wid), Migration.extend, _noted(request))


async def cancel(client: Client, wid: str, request: CancelInput) -> str:
    return await _update(client.get_workflow_handle(wid), Migration.cancel, _noted(request))


@dataclass
class WhitelistDiff:
    missing: list[str]  # in the file, not filed
    extra: list[str]  # filed, not in the file
    filed: int


async def whitelist_diff(client: Client, settings: Settings, wid: str, listed: list[str]) -> WhitelistDiff:
    """The file's addresses against what the move filed: the portal's records (http), or the
    move's own list once a person confirmed filing it (manual)."""
    rows = await asyncio.to_thread(_whitelist_rows, settings.database.url, wid)
    filed = {r.lower(): r for r in rows}
    shown = await show(client, settings, wid)
    if shown.status is not None:
        filed |= {a.address.lower(): a.address for a in shown.status.addresses if a.state != AddressState.PENDING}
    wanted = {a.lower(): a for a in listed}
    return WhitelistDiff(
        missing=[wanted[k] for k in wanted if k not in filed],
        extra=sorted(filed[k] for k in filed if k not in wanted),
        filed=len(filed),
    )


def _whitelist_rows(url: str, wid: str) -> list[str]:
    with ready(url)() as session:
        return [
            r.subject
            for r in portal_requests(session, wid)
            if r.kind == Request.WHITELIST and r.state == RequestState.FILED
        ]


def jsonable(value: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON values (ISO 8601 times)."""
    if dataclasses.is_dataclass(value):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
