"""Activities that wait on the network beat while they run, so an attempt lost with its worker
is retried within the heartbeat timeout (seconds) instead of its start-to-close timeout, and
a worker that is told to stop (SIGTERM) hands its attempts back at once instead of letting
them run out their grace or their timeout.

The beat comes from a task beside the activity's own work: a DNS query, an HTTP request or an
SMTP reply that is slow to come keeps beating, so a slow peer is never taken for a lost worker.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

P = ParamSpec("P")
T = TypeVar("T")

WORKER_SHUTDOWN = "WorkerShutdown"  # the error type of an attempt handed back at shutdown

# seconds between two beats; the worker sends at most one every 2 s (worker.py), well inside
# the shortest heartbeat timeout a move is given (timing.heartbeat_timeout, 5 s by default)
BEAT = 1.0


def beating(run: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run the activity with a heartbeat beside it; on worker shutdown, stop it and fail the
    attempt as retryable (`WorkerShutdown`), so the server hands it to another worker now."""

    @functools.wraps(run)
    async def beating_run(*args: P.args, **kwargs: P.kwargs) -> T:
        if not _in_activity():
            return await run(*args, **kwargs)
        work = asyncio.ensure_future(run(*args, **kwargs))
        pulse = asyncio.create_task(_pulse())
        shutdown = asyncio.create_task(activity.wait_for_worker_shutdown())
        try:
            await asyncio.wait((work, shutdown), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pulse.cancel()
            shutdown.cancel()
            if not work.done():  # cancelled by the workflow, or the worker is stopping
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)  # stopped for real before we report
        if work.cancelled():
            raise ApplicationError(
                f"{activity.info().activity_type}: the worker shut down during this attempt; handed back",
                type=WORKER_SHUTDOWN,
            )
        return work.result()

    return beating_run


def _in_activity() -> bool:
    """Whether a worker runs this: the same methods are called directly too (by a command, a
    test), with no server to beat to and no shutdown to watch."""
    try:
        activity.info()
    except RuntimeError:
        return False
    return True


async def _pulse() -> None:
    while True:
        await asyncio.sleep(BEAT)  # an activity done within a beat sends none
        activity.heartbeat()
