"""Moves started by an earlier release replay on this one.

Each file under histories/ is the whole history of a move that the release in its name ran
(a domain move of bench/wave's sandbox world). A workflow change that adds or drops a command
without `workflow.patched` would break such a move when its worker is upgraded; here it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_move_of_an_earlier_release_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=WORKFLOWS).replay_workflow(history)
    assert result.replay_failure is None
