"""Moves started by an earlier release replay on this one.

Each file under histories/ is the whole history of a move that the release in its name ran
(a domain move of bench/wave's sandbox world). A workflow change that adds or drops a command
without `workflow.patched` would break such a move when its worker is upgraded; here it fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from mailmove.payload_codec import EncryptionCodec, MovesInClear, data_converter, read_key_file
from tests.conftest import PAYLOAD_KEY
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def encrypting(admitted: set[str]) -> DataConverter:
    """A worker's converter once encryption is on, reading in clear only the moves `admitted`
    (here still running, and begun long before the key)."""
    in_clear = MovesInClear()
    in_clear.ids |= admitted
    in_clear.since = datetime.now(UTC)

    async def began_long_ago(workflow_id: str) -> tuple[bool, datetime]:
        return True, datetime(2026, 1, 1, tzinfo=UTC)

    in_clear.describe = began_long_ago
    return data_converter(EncryptionCodec([read_key_file(PAYLOAD_KEY)], in_clear))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_move_of_an_earlier_release_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=WORKFLOWS).replay_workflow(history)
    assert result.replay_failure is None
    # these moves ran before payloads were encrypted: a worker with the codec replays them too,
    # once they are admitted as moves in clear, and refuses them otherwise
    admitted = await Replayer(workflows=WORKFLOWS, data_converter=encrypting({path.stem})).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert admitted.replay_failure is None
    refused = await Replayer(workflows=WORKFLOWS, data_converter=encrypting(set())).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert refused.replay_failure is not None and "Encoded failure" in str(refused.replay_failure)
