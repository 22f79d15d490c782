"""Connecting to Temporal: the configured cluster, or the embedded dev server of `mailmove up`.

Every process connects here, so each gets the same transport security (TLS, mTLS, an API key,
all read from files) and the same payload encryption. Who connects decides how strictly
payloads are read: a `Role.CLIENT` (CLI, dashboard) only reads and decodes anything; the
worker refuses payloads in clear except inside moves that were running before encryption; the
host agent refuses every payload that is not encrypted with a known key.
"""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import IndexedValueType, WorkflowExecutionStatus
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from mailmove.base import search
from mailmove.base.config import Settings, TemporalConfig, read_secret
from mailmove.base.errors import ConfigError
from mailmove.base.payload_codec import (
    Always,
    EncryptionCodec,
    MovesInClear,
    Never,
    PayloadKey,
    data_converter,
    read_key_file,
    write_key_file,
)

EMBEDDED_KEY = "payload-key"  # beside the dev server's state in var/
CONNECT_TIMEOUT = 30.0  # seconds for a connection with its TLS handshake
# what a failure named by `_tls_hint` asks of the postmaster
_TLS_ADVICE = {
    "temporal.tls": "the frontend and this client disagree about TLS: set temporal.tls (and the tls_* files) "
    "as the frontend speaks",
    "temporal.tls_ca_file": "the frontend's certificate is not signed by temporal.tls_ca_file (or has expired)",
    "temporal.tls_server_name": "the frontend's certificate does not carry this name: set temporal.tls_server_name",
    "temporal.tls_cert_file": "the frontend refused this client's certificate (none, another CA's, or expired)",
    "temporal.tls_key_file": "temporal.tls_key_file is not the key of temporal.tls_cert_file",
    "temporal.api_key_file": "the frontend refused the API key",
    "temporal.address": "this address speaks TLS without HTTP/2: not a Temporal frontend (a TLS proxy must offer h2)",
    "temporal.embedded_listen": "this address speaks TLS without HTTP/2: not a Temporal frontend",
}
MAX_SECRET_FILE = 1 << 20  # a certificate chain, a key or an API key: far less than this


class Role(enum.Enum):
    CLIENT = "client"  # reads and acts through Temporal's API: decodes whatever it is shown
    WORKER = "worker"  # runs the workflows and the effects: refuses payloads in clear
    AGENT = "agent"  # runs as root on a mail server: needs a key, refuses anything else


class Unreachable(RuntimeError):
    """Temporal did not answer at the configured address: the environment, not the config."""


def address(settings: Settings) -> str:
    return settings.temporal.address or str(settings.temporal.embedded_listen)


def address_key(settings: Settings) -> str:
    return "temporal.address" if settings.temporal.address else "temporal.embedded_listen"


def _secret(path: str, key: str) -> bytes:
    return read_secret(path, key, MAX_SECRET_FILE)


def tls_config(t: TemporalConfig) -> TLSConfig | bool:
    """TLS as configured; an API key is never sent in clear, so it turns TLS on by itself."""
    if not t.uses_tls:
        return False
    if bool(t.tls_cert_file) != bool(t.tls_key_file):
        missing = "temporal.tls_key_file" if t.tls_cert_file else "temporal.tls_cert_file"
        raise ConfigError(missing, "mTLS needs both a client certificate file and its key file")
    return TLSConfig(
        server_root_ca_cert=_secret(t.tls_ca_file, "temporal.tls_ca_file") if t.tls_ca_file else None,
        domain=t.tls_server_name or None,
        client_cert=_secret(t.tls_cert_file, "temporal.tls_cert_file") if t.tls_cert_file else None,
        client_private_key=_secret(t.tls_key_file, "temporal.tls_key_file") if t.tls_key_file else None,
    )


def api_key(t: TemporalConfig) -> str | None:
    if not t.api_key_file:
        return None
    text = _secret(t.api_key_file, "temporal.api_key_file").decode("utf-8", "replace").strip()
    if any(not c.isprintable() or c.isspace() for c in text):
        raise ConfigError("temporal.api_key_file", f"{t.api_key_file} must hold the key alone, on one line")
    return text


def payload_keys(settings: Settings, create: bool = False) -> list[PayloadKey]:
    """The configured key ring; for the embedded stack `var/payload-key`, made by `up` (`create`)
    on its first start. A cluster without key files has payloads in clear."""
    files = settings.temporal.encryption_key_files
    if files:
        return [read_key_file(f) for f in files]
    if settings.temporal.address:
        return []
    path = Path(settings.var_dir) / EMBEDDED_KEY
    if not path.exists():
        if not create:
            raise ConfigError("temporal.encryption_key_files", f"{path} does not exist yet: `mailmove up` makes it")
        return [write_key_file(path)]
    return [read_key_file(path)]


def _tls_hint(settings: Settings, message: str) -> str | None:
    """The configuration key to look at when a connection failed for a TLS reason, if it did.
    `message` is the Rust core's (tonic, hyper, rustls); every text matched here was seen in
    tests/security/test_temporal_tls.py, against a TLS proxy that requires client certificates."""
    t, text = settings.temporal, message.lower()
    alert = text.partition("alert")[2][:40]  # "received fatal alert: X" (TLS 1.3), "AlertReceived(X)" (1.2)
    if "notvalidforname" in text:  # InvalidCertificate(NotValidForNameContext {..}): the name is not in it
        return "temporal.tls_server_name"
    if "invalidcertificate" in text:  # the server's certificate: UnknownIssuer (our CA), Expired...
        return "temporal.tls_ca_file"
    if "privatekeyparseerror" in text or "inconsistentkeys" in text:  # no key, or not the certificate's
        return "temporal.tls_key_file"
    if "nocertificatespresented" in text or any(w in alert for w in ("certificate", "unknownca", "handshakefailure")):
        return "temporal.tls_cert_file"  # none in the file; the server refused ours or wanted one
    if "invalidcontenttype" in text or "corruptmessage" in text:  # TLS to a server answering in clear
        return "temporal.tls"
    if "after connection" in text and any(w in text for w in ("broken pipe", "reset", "unexpectedeof", "closed")):
        # The server hung up on the first request. In clear: it wants TLS. Over TLS 1.3: it checked
        # our certificate after our side of the handshake, and its alert can lose the race (1 in 20).
        return "temporal.tls_cert_file" if t.uses_tls else "temporal.tls"
    if "h2notnegotiated" in text:  # TLS without HTTP/2: not a gRPC port (a web UI, a proxy without h2)
        return address_key(settings)
    if "unauthenticated" in text or "unauthorized" in text:
        return "temporal.api_key_file"
    return None


async def connect(
    settings: Settings, role: Role = Role.CLIENT, target: str = "", keys: list[PayloadKey] | None = None
) -> Client:
    """A client with the configured security; `target` overrides the address (the dev server of
    `up`), `keys` the key ring. A TLS failure names the key to look at (ConfigError, exit 2);
    a server that does not answer is `Unreachable` (exit 1)."""
    t = settings.temporal
    keys = payload_keys(settings, create=False) if keys is None else keys
    if role is Role.AGENT and not keys:
        raise ConfigError(
            "temporal.encryption_key_files", "the host agent takes work only under a payload key: configure one"
        )
    codec = None
    if keys:
        plain = {Role.CLIENT: Always, Role.WORKER: MovesInClear, Role.AGENT: Never}[role]()
        codec = EncryptionCodec(keys, plain)
    target = target or address(settings)
    try:
        return await asyncio.wait_for(
            Client.connect(
                target,
                namespace=t.namespace,
                tls=tls_config(t),
                api_key=api_key(t),
                data_converter=data_converter(codec),
            ),
            CONNECT_TIMEOUT,
        )
    except TimeoutError:
        # the core's own timeout covers only TCP: a peer that takes the connection and never
        # answers the TLS handshake would hold it forever
        raise Unreachable(f"{address_key(settings)}: {target} did not answer within {CONNECT_TIMEOUT:.0f} s") from None
    except RuntimeError as exc:
        hint = _tls_hint(settings, str(exc))
        if hint:
            raise ConfigError(hint, f"{_TLS_ADVICE.get(hint, 'the TLS connection failed')} ({target}): {exc}") from None
        raise Unreachable(f"{address_key(settings)}: {target} does not answer: {exc}") from None


def reader(client: Client) -> Client:
    """A client on the same connection and keys that decodes anything (the dashboard of `up`,
    beside its strict worker): it reads moves begun in clear, and acts only through Temporal's API."""
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec):
        return client
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=data_converter(EncryptionCodec(codec.keys, Always())),
    )


async def admit_moves_in_clear(client: Client, settings: Settings) -> list[str]:
    """The worker decodes payloads in clear inside the moves that began before encryption (before
    the oldest stamp of its keys, as `mailmove keygen` writes it) and still run, and nowhere else.
    Keys without a stamp admit no move. Each admitted move is asked of Temporal again when its
    payloads arrive (`MovesInClear`)."""
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec) or not isinstance(codec.plain, MovesInClear):
        return []
    stamps = [k.created for k in codec.keys if k.created]
    if not stamps:
        return []
    since = min(stamps)
    query = (
        f"ExecutionStatus = 'Running' AND TaskQueue = '{settings.temporal.task_queue}' "
        f"AND StartTime < '{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    )
    found = [w.id async for w in client.list_workflows(query)]
    codec.plain.since, codec.plain.describe = since, partial(_latest_run, client)
    codec.plain.ids.update(found)
    return found


async def _latest_run(client: Client, workflow_id: str) -> tuple[bool, datetime]:
    """Whether the latest run of `workflow_id` is running, and when it began (no payload read)."""
    described = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    info = described.workflow_execution_info
    running = info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    return running, info.start_time.ToDatetime(UTC)


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
