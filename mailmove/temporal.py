"""Connecting to Temporal: the configured cluster, or the embedded dev server of `mailmove up`."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from mailmove.config import Settings
from workflows import search


def address(settings: Settings) -> str:
    return settings.temporal.address or str(settings.temporal.embedded_listen)


async def connect(settings: Settings) -> Client:
    return await Client.connect(address(settings), namespace=settings.temporal.namespace)


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Idempotent: adds the attributes that are missing, leaves the rest; returns those added."""
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        existing = set(listed.custom_attributes)
    except RPCError as exc:
        if exc.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server cannot list
            raise
        existing = set()
    missing = {key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in search.ALL if key.name not in existing}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


def host_queue(task_queue: str, fqdn: str) -> str:
    """The task queue of the host agent on `fqdn`: Temporal's worker-specific task queue."""
    return f"{task_queue}-host-{fqdn}"
