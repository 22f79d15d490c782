"""The payload key of the tests' Temporal clients and of every sandbox configuration they write:
one per test run, in a folder of its own."""

from __future__ import annotations

import tempfile
from pathlib import Path

from temporalio.converter import DataConverter

from mailmove.base.payload_codec import Always, EncryptionCodec, data_converter, read_key_file, write_key_file

PAYLOAD_KEY = Path(tempfile.mkdtemp(prefix="mailmove-tests-")) / "payload-key"
write_key_file(PAYLOAD_KEY)


def encrypting() -> DataConverter:
    """What the tests' clients use: the payload codec of every mailmove process, decoding
    anything (a client acts on nothing); the strict workers are those built from a config."""
    return data_converter(EncryptionCodec([read_key_file(PAYLOAD_KEY)], Always()))
