"""What payload encryption costs per payload. Prints its figures; touches no network.

Each value goes through the SDK's default data converter and through mailmove's (the same,
with the AES-256-GCM codec), encoded and decoded again; the difference of the medians is the
codec's cost. Values: a small activity argument (an MX change), a domain move's input with a
Whitelist of 200 addresses, and a 64 KiB blob (about the largest payload a move carries).

Run: .venv/bin/python bench/codec.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from temporalio.converter import DataConverter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailmove.base.model import DomainMoveInput, MxChange, MxRecord  # noqa: E402
from mailmove.base.payload_codec import EncryptionCodec, data_converter, write_key_file  # noqa: E402


def samples() -> dict[str, object]:
    gateway = [MxRecord(10, f"{c}2681.mx.srv.dfn.de") for c in "abc"]
    change = MxChange("chem.example.org", "chem.example.org", gateway, [[MxRecord(5, "mail.chem.example.org")]], 3600)
    move = DomainMoveInput(
        domain="chem.example.org",
        legacy_mx="mail.chem.example.org",
        gateway_mx=[r.exchange for r in gateway],
        addresses=[f"person{i:03d}@chem.example.org" for i in range(200)],
    )
    return {"MX change (activity argument)": change, "domain move, 200 addresses": move, "64 KiB blob": "x" * 65536}


async def round_trip_us(converter: DataConverter, value: object, rounds: int) -> tuple[float, int]:
    """Median microseconds for encode + decode of `value`, and the encoded size in bytes."""
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        [payload] = await converter.encode([value])
        await converter.decode([payload], [type(value)])
        times.append((time.perf_counter() - began) * 1e6)
    return statistics.median(times), payload.ByteSize()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    key = write_key_file(Path(tempfile.mkdtemp(prefix="mailmove-bench-codec-")) / "payload-key")
    plain, sealed = DataConverter.default, data_converter(EncryptionCodec([key]))
    print(f"encode + decode of one payload, median of {args.rounds} rounds")
    for name, value in samples().items():
        base, size = await round_trip_us(plain, value, args.rounds)
        with_codec, sealed_size = await round_trip_us(sealed, value, args.rounds)
        print(
            f"  {name}: {base:.1f} µs in clear, {with_codec:.1f} µs encrypted: the codec adds "
            f"{with_codec - base:.1f} µs ({with_codec / base:.2f}x); {size} → {sealed_size} bytes"
        )


if __name__ == "__main__":
    asyncio.run(main())
