"""Encrypted payloads: what Temporal stores of a move (addresses, TU-IDs, contacts, errors that
quote them) is AES-256-GCM ciphertext, so a history read on the server, in a backup or by
anyone who reaches the frontend holds no personal data in clear.

Workers and the host agent read strictly: a payload in clear, of an unknown key or of another
workflow is refused, so a caller without the key can give them no payload to act on (what
Temporal does without a payload of ours, cancel or reset, stays Temporal's to authorise).

Key files hold one base64 line of 32 random bytes; `mailmove keygen FILE` writes one (0600)
with the `created` stamp that admits the moves begun in clear before it. Several files make a
key ring: the first encrypts, all decrypt, so a key is rotated without a stop. A key's id is
derived from the key itself, carried in each payload's metadata, and bound to the ciphertext
as associated data together with the payload's workflow id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from mailmove.base.config import read_secret
from mailmove.base.errors import ConfigError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
WORKFLOW_ID = "encryption-workflow-id"  # the workflow a payload belongs to, bound to its ciphertext
NONCE_BYTES = 12
MAX_KEY_FILE = 4096  # a key file is one line; anything larger is not one
log = logging.getLogger("mailmove.codec")


class PlainPayloadRefused(ValueError):
    """A payload this reader does not accept: in clear, of an unknown key, of another workflow,
    or tampered with. It is not decoded."""


@dataclass(frozen=True)
class PayloadKey:
    id: str
    aead: AESGCM
    created: datetime | None  # when encryption with this key began: the stamp `keygen` writes


def key_from_bytes(secret: bytes, created: datetime | None) -> PayloadKey:
    if len(secret) != 32:
        raise ValueError(f"a key is 32 bytes (AES-256), not {len(secret)}")
    return PayloadKey(hashlib.sha256(b"mailmove payload key\0" + secret).hexdigest()[:16], AESGCM(secret), created)


_CREATED = re.compile(r"created (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def read_key_file(path: str | Path, key: str = "temporal.encryption_key_files") -> PayloadKey:
    """The key in `path`: its one non-comment line, base64 of 32 bytes."""
    text = read_secret(path, key, MAX_KEY_FILE)
    every = [line.strip() for line in text.decode("ascii", "replace").splitlines()]
    lines = [line for line in every if line and not line.startswith("#")]
    stamp = next((m.group(1) for line in every if line.startswith("#") and (m := _CREATED.search(line))), None)
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if stamp else None
    try:
        if len(lines) != 1:
            raise ValueError("it must hold exactly one base64 line")
        return key_from_bytes(base64.b64decode(lines[0], validate=True), created)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(key, f"{path} is not a payload key ({exc}); `mailmove keygen FILE` writes one") from None


def write_key_file(path: str | Path) -> PayloadKey:
    """A new random key in a new file, mode 0600; an existing file is never overwritten."""
    secret, created = os.urandom(32), datetime.now(UTC).replace(microsecond=0)
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# mailmove payload key (AES-256-GCM), created {created:%Y-%m-%dT%H:%M:%SZ}\n")
        handle.write(base64.b64encode(secret).decode() + "\n")
    return key_from_bytes(secret, created)


class Plain(Protocol):
    """Whether a payload in clear may still be decoded, for the workflow it belongs to."""

    async def admits(self, workflow_id: str | None) -> bool: ...


class Always:
    """A reading client: it acts on nothing, and moves begun before encryption are read too."""

    async def admits(self, workflow_id: str | None) -> bool:
        return True


class Never:
    """The host agent: work comes encrypted with its key, or not at all."""

    async def admits(self, workflow_id: str | None) -> bool:
        return False


class MovesInClear:
    """The worker: payloads in clear only inside the moves that were running before encryption
    was turned on (`mailmove.temporal.admit_moves_in_clear` lists them at start). Each time, the
    move is asked of Temporal again: its latest run must still be running and must have begun
    before `since`, so a run started later under an admitted id is not one of them. (Only a
    replay of such a move's older history reads payloads in clear: this is rare.)"""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.since: datetime | None = None
        self.describe: Callable[[str], Awaitable[tuple[bool, datetime]]] | None = None  # -> (running, began)

    async def admits(self, workflow_id: str | None) -> bool:
        if workflow_id not in self.ids or self.since is None or self.describe is None:
            return False
        running, began = await self.describe(workflow_id)
        if running and began < self.since:
            return True
        self.ids.discard(workflow_id)
        return False


def _workflow_id(context: SerializationContext | None) -> str | None:
    if isinstance(context, (WorkflowSerializationContext, ActivitySerializationContext)):
        return context.workflow_id
    return None


def refused(reason: str) -> Payload:
    """What a refused payload decodes to: a payload no converter reads, whose encoding says why.
    Raising instead would fail the whole workflow task, again at every retry, so one signal in
    clear could stall a move; this way only what needed the payload fails (a signal is dropped,
    an update or an activity fails, a workflow's start input fails its task)."""
    log.warning("%s", reason)
    return Payload(metadata={"encoding": f"refused: {reason}".encode()})


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over each whole payload (metadata and data), under the ring's first key,
    bound to the workflow it belongs to: the key id and the workflow id (carried in the
    metadata, as Temporal shows it anyway) are the associated data, and a strict reader with a
    context refuses a payload of another workflow. So a ciphertext copied from one move's
    history cannot be handed to another move or to a workflow of the copier's own.

    `plain` decides whether a payload that is not encrypted may still be decoded (`Always`,
    `Never`, `MovesInClear`)."""

    def __init__(
        self, keys: Sequence[PayloadKey], plain: Plain | None = None, context: SerializationContext | None = None
    ):
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self.keys = tuple(keys)
        self._by_id = {k.id: k for k in self.keys}
        self.plain = plain or Never()
        self.context = context

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        return EncryptionCodec(self.keys, self.plain, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out, workflow_id = [], _workflow_id(self.context)
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                try:
                    out.append(self.unseal(payload))
                except PlainPayloadRefused as exc:
                    out.append(refused(str(exc)))
            elif await self.plain.admits(workflow_id):
                out.append(payload)
            else:
                where = f" (workflow {workflow_id})" if workflow_id else ""
                out.append(refused(f"a payload that is not encrypted with a mailmove key{where}"))
        return out

    def seal(self, payload: Payload) -> Payload:
        key, workflow_id = self.keys[0], _workflow_id(self.context) or ""
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, payload.SerializeToString(), _bound(key.id, workflow_id))
        metadata = {"encoding": ENCODING, KEY_ID: key.id.encode(), WORKFLOW_ID: workflow_id.encode()}
        return Payload(metadata=metadata, data=nonce + sealed)

    def unseal(self, payload: Payload) -> Payload:
        """The payload inside, for its own workflow only; PlainPayloadRefused otherwise."""
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        claimed = payload.metadata.get(WORKFLOW_ID, b"").decode("utf-8", "replace")
        key = self._by_id.get(key_id)
        if key is None:
            raise PlainPayloadRefused(f"a payload encrypted with an unknown key {key_id[:32]!r}")
        expected = _workflow_id(self.context)
        if expected is not None and claimed != expected:
            raise PlainPayloadRefused(f"a payload of workflow {claimed[:100]!r}, not of {expected[:100]!r}")
        data = payload.data
        try:
            return Payload.FromString(key.aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _bound(key_id, claimed)))
        except InvalidTag:
            raise PlainPayloadRefused(f"a payload that does not authenticate under key {key_id}") from None


def _bound(key_id: str, workflow_id: str) -> bytes:
    return f"{key_id}\n{workflow_id}".encode()


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The SDK's default conversion, with `codec` over every payload and the failures' messages
    and stack traces moved into encoded attributes (an error may quote an address)."""
    if codec is None:
        return DataConverter.default
    return DataConverter(payload_codec=codec, failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
