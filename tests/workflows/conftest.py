"""The workflows' logic tests: the real workflows on the time-skipping server with fake activities."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.fake_world import FakeWorld, fake_world
from tests.support.whitelist import withheld_move


@pytest.fixture
async def world(time_env) -> AsyncIterator[FakeWorld]:
    async with fake_world(time_env) as running:
        yield running


@pytest.fixture
async def move(time_env, worker_for, sandbox_factory, tmp_path):
    """The Whitelist and recheck tests' domain move, with the real activities: the centre withholds MISSING."""
    async with withheld_move(time_env, worker_for, sandbox_factory, tmp_path) as started:
        yield started
