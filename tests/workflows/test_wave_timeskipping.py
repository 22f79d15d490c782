"""A wave on the time-skipping server with the real activities: five domain moves from one CSV,
at most two at once and one a second, each finishing as it would alone."""

from __future__ import annotations

from datetime import timedelta

from temporalio.worker import Replayer

from mailmove.service.waves import prepare_wave, start_wave
from tests.support.moves import skip_to_end
from tests.support.payloads import encrypting
from tests.support.settings import settings_for
from workflows.domain_move import DomainMoveWorkflow
from workflows.server_move import ServerMoveWorkflow
from workflows.wave import WaveWorkflow

DOMAINS = ("chem", "phys", "bio", "math", "geo")


def csv_of(tmp_path, rows: list[str]):
    path = tmp_path / "autumn.csv"
    path.write_text("domain,legacy_mx\n" + "".join(f"{r}\n" for r in rows))
    return path


async def test_a_wave_throttles_its_moves(time_env, worker_for, sandbox_factory, tmp_path):
    world = sandbox_factory(domains=tuple(f"{d}.sandbox.test" for d in DOMAINS), confirm_after=0)
    settings = settings_for(world, time_env, portal_mode="http", timing={"probe_interval": 60})
    await worker_for(time_env.client, settings)
    path = csv_of(tmp_path, [f"{d}.sandbox.test,mail.{d}.sandbox.test" for d in DOMAINS])
    wave = await prepare_wave(settings, path, concurrency=2, rate="60/min", actor="alice")
    assert [(r.line, r.subject) for r in wave.rows] == [(i + 2, f"{d}.sandbox.test") for i, d in enumerate(DOMAINS)]
    handle = time_env.client.get_workflow_handle_for(
        WaveWorkflow.run, await start_wave(time_env.client, settings, wave)
    )

    assert await skip_to_end(time_env, handle, timedelta(minutes=1)) == {"done": 5}
    rows = (await handle.query(WaveWorkflow.status)).rows
    assert [r.state for r in rows] == ["done"] * 5 and all("may now be switched off" in r.message for r in rows)
    starts = sorted(r.started for r in rows)
    assert all(b - a >= timedelta(seconds=1) for a, b in zip(starts, starts[1:], strict=False))  # 60 a minute
    for row in rows:  # never more than two at once
        assert sum(other.started <= row.started < other.ended for other in rows) <= 2
    child = time_env.client.get_workflow_handle(rows[0].workflow_id)
    assert (await child.describe()).parent_id == handle.id  # the usual id, under the wave
    await Replayer(
        workflows=[WaveWorkflow, DomainMoveWorkflow, ServerMoveWorkflow], data_converter=encrypting()
    ).replay_workflow(await handle.fetch_history())
