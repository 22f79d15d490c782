"""The baseline of bench/wave.py: a wave of no-op moves, each with the same activities and
timers as one real move of the same run, so only what mailmove's activities do differs.

`NoopMove` replays its real move's profile: for each scheduled activity one no-op activity, for
each timer a sleep of the same length, in the order of the real history. `NoopWave` starts
them as WaveWorkflow starts real moves: at most `concurrency` at once, paced by `spacing`.

Run as a worker process, the repository on PYTHONPATH: python bench/noop_wave.py CONFIG TASK_QUEUE
"""

import asyncio
import sys
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from workflows.wave import Pace  # the same pacing as the real wave


@dataclass
class NoopMoveInput:
    profile: list[float]  # -1: an activity; else a timer of that many seconds


@dataclass
class NoopWaveInput:
    concurrency: int
    spacing: float
    profiles: list[list[float]]  # one a move: its real move's profile


@activity.defn
async def noop() -> None:
    """Does nothing: what is left is the orchestration."""


@workflow.defn
class NoopMove:
    @workflow.run
    async def run(self, args: NoopMoveInput) -> None:
        for step in args.profile:
            if step < 0:
                await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=60))
            else:
                await workflow.sleep(step)


@workflow.defn
class NoopWave:
    def __init__(self) -> None:
        self.running = 0

    @workflow.run
    async def run(self, args: NoopWaveInput) -> int:
        pace = Pace(timedelta(seconds=args.spacing))
        moves = []
        for number, profile in enumerate(args.profiles):
            await workflow.wait_condition(lambda: self.running < args.concurrency)
            await pace.next()
            self.running += 1
            moves.append(asyncio.create_task(self.move(number, profile)))
        await asyncio.gather(*moves)
        return len(moves)

    async def move(self, number: int, profile: list[float]) -> None:
        await workflow.execute_child_workflow(
            NoopMove.run, NoopMoveInput(profile), id=f"{workflow.info().workflow_id}-{number}"
        )
        self.running -= 1


async def serve(config: str, task_queue: str) -> None:
    from mailmove.base.config import load_settings
    from mailmove.base.processes import stop_on_signals
    from mailmove.base.temporal import connect

    client = await connect(load_settings(config), keys=[])  # Temporal alone: payloads in clear
    async with Worker(client, task_queue=task_queue, workflows=[NoopWave, NoopMove], activities=[noop]):
        await stop_on_signals().wait()


if __name__ == "__main__":
    from mailmove.base.processes import exit_process

    asyncio.run(serve(sys.argv[1], sys.argv[2]))
    exit_process(0)  # as `mailmove worker` ends: an ordinary shutdown crashed, losing a run of bench/wave
