"""A worker joins a task queue only where no other deployment's workers poll: a worker with
another store, other zones, another gateway or another portal would run a move's activities
against the wrong world (the other stack's TSIG keys, DNS, store).

Each worker says what it runs with in its Temporal identity, one short hash per setting, and
reads the identities of the queue's live pollers (DescribeTaskQueue) before it polls itself.
The store names the deployment: a poller with another `database.url` is another deployment,
refused with every key that differs; one with the same store and other settings is this
deployment in a rolling update, which is only logged."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from mailmove.base.config import Settings
from mailmove.base.errors import ConfigError

MARK = "mailmove"
STALE = timedelta(seconds=90)  # a live worker polls again within a minute; Temporal lists pollers longer
log = logging.getLogger("mailmove.worker")


# the settings a move's activities depend on, by the key a postmaster would look at
MATTERS: dict[str, Callable[[Settings], object]] = {
    "dns.zones": lambda s: s.dns.zones,
    "gateway": lambda s: s.gateway,
    "portal": lambda s: (s.portal.mode, s.portal.url, s.portal.domain_form, s.portal.tsl_form, s.portal.wl_form),
    "database.url": lambda s: s.database.shown,
}


def fingerprint(settings: Settings) -> dict[str, str]:
    return {key: hashlib.sha256(repr(part(settings)).encode()).hexdigest()[:8] for key, part in MATTERS.items()}


def identity(settings: Settings) -> str:
    """`mailmove PID@HOST dns.zones=1a2b3c4d gateway=...`: the worker's Temporal identity."""
    marks = " ".join(f"{k}={v}" for k, v in fingerprint(settings).items())
    return f"{MARK} {os.getpid()}@{socket.gethostname()} {marks}"


def _parsed(text: str) -> tuple[int, str, dict[str, str]] | None:
    words = text.split()
    if len(words) < 2 or words[0] != MARK or "@" not in words[1]:
        return None  # not a mailmove worker of this release: a tool, a test's own worker
    pid, _, host = words[1].partition("@")
    marks = dict(w.split("=", 1) for w in words[2:] if "=" in w)
    return (int(pid) if pid.isdigit() else -1), host, marks


def _gone(pid: int, host: str) -> bool:
    """A worker of this machine whose process has ended (Temporal lists pollers for minutes)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def check_task_queue(client: Client, settings: Settings) -> None:
    """ConfigError for a namespace the cluster does not have, or for a live poller of another
    deployment (naming the keys that differ); a warning for this deployment's pollers with other
    settings; nothing when the queue is ours alone or shared alike."""
    t = settings.temporal
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=t.namespace))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                "temporal.namespace", f"{t.namespace!r} does not exist on {t.address or 'the dev server'}"
            ) from None
        raise
    mine, me = fingerprint(settings), identity(settings).split()[1]
    fresh = datetime.now(UTC) - STALE
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=t.namespace, task_queue=TaskQueue(name=t.task_queue), task_queue_type=kind
            )
        )
        for poller in described.pollers:
            parsed = _parsed(poller.identity)
            if parsed is None or f"{parsed[0]}@{parsed[1]}" == me or _gone(parsed[0], parsed[1]):
                continue
            if poller.HasField("last_access_time") and poller.last_access_time.ToDatetime(UTC) < fresh:
                continue  # stopped polling a while ago: a worker that is gone
            differ = [key for key, mark in mine.items() if parsed[2].get(key) != mark]
            if differ and "database.url" in differ:
                raise ConfigError(
                    differ[0],
                    f"task queue {t.task_queue!r} is polled by the worker {parsed[0]}@{parsed[1]} of another "
                    f"deployment (other {', '.join(differ)}): this worker would run its moves with other settings. "
                    "Use that deployment's configuration, or a task queue of its own (temporal.task_queue)",
                )
            if differ:
                log.warning(
                    "task queue %s is also polled by %s@%s with other %s (same store: a rolling update?)",
                    t.task_queue, parsed[0], parsed[1], ", ".join(differ),
                )  # fmt: skip
