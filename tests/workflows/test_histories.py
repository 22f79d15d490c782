"""Moves started by an earlier release replay on this one.

Each file under histories/ is the whole history of a run that the release in its name made:
domain moves of bench/wave's sandbox world, and later ones on the dev server whose done path
schedules its guard (patched "guard-schedule"), the latest also mailing its contact beside the
stages ("notify-apart"; `MAILMOVE_RECORD_HISTORIES=1` with tests/test_guard_schedule.py); a
server move and a wave on fake activities (the same with tests/workflows/test_server_move_logic.py
and test_wave_logic.py; the later server move sets Postfix's relay, patched "configure-mta"). A
workflow change that adds or drops a command without `workflow.patched` would break such a run
when its worker is upgraded; here it fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from mailmove.base.payload_codec import EncryptionCodec, MovesInClear, data_converter, read_key_file
from mailmove.worker import WORKFLOWS
from tests.support.fake_world import patches
from tests.support.payloads import PAYLOAD_KEY

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


def workflow_ids(history: WorkflowHistory) -> set[str]:
    """The run's own id and its children's: a wave reads each child's result in the child's context."""
    return {history.workflow_id} | {
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    }


def test_a_stored_domain_move_schedules_its_guard() -> None:
    """The done path of "guard-schedule" is among the runs replayed below."""
    moves = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in HISTORIES if p.stem.startswith("domain-move")]
    assert any("guard-schedule" in patches(h) for h in moves)


def test_a_stored_domain_move_mails_beside_its_stages() -> None:
    """The path of "notify-apart" (a mail to the contact as a task of its own) is among them."""
    moves = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in HISTORIES if p.stem.startswith("domain-move")]
    assert any("notify-apart" in patches(h) and "send_notice" in h.to_json() for h in moves)


def test_a_stored_server_move_configures_postfix() -> None:
    """The path of "configure-mta" with the option on (configure_postfix, probe_postfix) is among them too."""
    moves = [WorkflowHistory.from_json(p.stem, p.read_text()) for p in HISTORIES if p.stem.startswith("server-move")]
    assert any("configure-mta" in patches(h) and "configure_postfix" in h.to_json() for h in moves)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_run_of_an_earlier_release_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=WORKFLOWS).replay_workflow(history)
    assert result.replay_failure is None
    # these runs are in clear, as before payloads were encrypted: a worker with the codec replays
    # them too, once they are admitted as moves in clear, and refuses them otherwise
    admitted = await Replayer(workflows=WORKFLOWS, data_converter=encrypting(workflow_ids(history))).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert admitted.replay_failure is None
    refused = await Replayer(workflows=WORKFLOWS, data_converter=encrypting(set())).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert refused.replay_failure is not None and "Encoded failure" in str(refused.replay_failure)
