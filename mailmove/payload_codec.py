"""Encrypted payloads: what Temporal stores of a move (addresses, TU-IDs, contacts, errors that
quote them) is AES-256-GCM ciphertext, so a history read on the server, in a backup or by
anyone who reaches the frontend holds no personal data in clear.

The key is also what authorises a caller: a worker built with `strict` decoding refuses any
payload that is not encrypted with one of its keys, so a client without the key cannot hand
the worker or the host agent work, whatever Temporal itself lets it do.

Key files hold one base64 line of 32 random bytes (`mailmove keygen FILE` writes one, 0600;
`openssl rand -base64 32` makes the same). Several files make a key ring: the first encrypts,
all decrypt, so a key is rotated without a stop. A key's id is derived from the key itself,
carried in each payload's metadata, and bound to the ciphertext as associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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

from mailmove.config import ConfigError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
MAX_KEY_FILE = 4096  # a key file is one line; anything larger is not one


class PlainPayloadRefused(ValueError):
    """A payload arrived without the encryption this worker requires: it is not decoded."""


@dataclass(frozen=True)
class PayloadKey:
    id: str
    aead: AESGCM
    created: datetime  # when encryption with this key began: the file's stamp, else its mtime


def key_from_bytes(secret: bytes, created: datetime) -> PayloadKey:
    if len(secret) != 32:
        raise ValueError(f"a key is 32 bytes (AES-256), not {len(secret)}")
    return PayloadKey(hashlib.sha256(b"mailmove payload key\0" + secret).hexdigest()[:16], AESGCM(secret), created)


_CREATED = re.compile(r"created (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def read_key_file(path: str | Path, key: str = "temporal.encryption_key_files") -> PayloadKey:
    """The key in `path`: its one non-comment line, base64 of 32 bytes."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(key, f"{path} cannot be read: {exc.strerror or exc}") from None
    every = [line.strip() for line in text.decode("ascii", "replace").splitlines()]
    lines = [line for line in every if line and not line.startswith("#")]
    stamp = next((m.group(1) for line in every if line.startswith("#") and (m := _CREATED.search(line))), None)
    created = (
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if stamp
        else datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    )
    try:
        if len(text) > MAX_KEY_FILE or len(lines) != 1:
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


def always(_workflow_id: str | None) -> bool:
    return True


def never(_workflow_id: str | None) -> bool:
    return False


class MovesInClear:
    """The workflow ids whose payloads a worker still decodes in clear: the moves that were
    running before encryption was turned on (`mailmove.temporal.admit_moves_in_clear`)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self, workflow_id: str | None) -> bool:
        return workflow_id in self.ids


def _workflow_id(context: SerializationContext | None) -> str | None:
    if isinstance(context, (WorkflowSerializationContext, ActivitySerializationContext)):
        return context.workflow_id
    return None


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over each whole payload (metadata and data), under the ring's first key.

    `accept_plain` decides, from the serialization context, whether a payload that is not
    encrypted may still be decoded: always for a reading client (it acts on nothing), never
    for the host agent, and for the worker only inside the moves that were already running in
    clear when encryption was turned on (see `mailmove.temporal.moves_in_clear`).
    """

    def __init__(
        self,
        keys: Sequence[PayloadKey],
        accept_plain: Callable[[str | None], bool] = never,
        context: SerializationContext | None = None,
    ):
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self.keys = tuple(keys)
        self._by_id = {k.id: k for k in self.keys}
        self.accept_plain = accept_plain
        self.context = context

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        """A copy that knows whose payloads it reads, only where that decides anything: the SDK
        rebuilds the whole data converter for each context a codec answers with a new object."""
        if isinstance(self.accept_plain, MovesInClear) and self.accept_plain.ids:
            return EncryptionCodec(self.keys, self.accept_plain, context)
        return self

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, payload.SerializeToString(), key.id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key.id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            workflow_id = _workflow_id(self.context)
            if self.accept_plain(workflow_id):
                return payload
            raise PlainPayloadRefused(
                "refused a payload that is not encrypted with a mailmove key"
                + (f" (workflow {workflow_id})" if workflow_id else "")
            )
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        key = self._by_id.get(key_id)
        if key is None:
            raise PlainPayloadRefused(f"refused a payload encrypted with an unknown key {key_id[:32]!r}")
        data = payload.data
        try:
            return Payload.FromString(key.aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key.id.encode()))
        except InvalidTag:
            raise PlainPayloadRefused(f"refused a payload that does not authenticate under key {key_id}") from None


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The SDK's default conversion, with `codec` over every payload and the failures' messages
    and stack traces moved into encoded attributes (an error may quote an address)."""
    if codec is None:
        return DataConverter.default
    return DataConverter(payload_codec=codec, failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
