"""Timeouts and retry policies of every activity, in one place (docs/recovery.md: why, and how
the durations beside them were measured).

A worker that dies mid-attempt is noticed by a timeout only: the heartbeat timeout for every
activity that waits on the network (they beat every second, activities/heartbeat.py), the
start-to-close timeout below for the database writes. Every activity is idempotent (the portal
by its idempotency key, DNS by compare-and-swap, the rest only reads or writes by key), so an
attempt lost that way is simply retried; it must not use up a budget meant for real failures.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from mailmove.base.model import Timings

# A stage's activity: retried without an attempt cap (attempts lost to dead workers end in
# timeouts and must not count), every 1, 2, 4, 8 then 10 s, within the move's
# `timing.retry_limit` (the schedule-to-close bound, `stage_activity` below); only a
# non-retryable error or that bound makes the stage wait for a postmaster's retry. The 10 s
# cap keeps the retry after a lost attempt within seconds even when earlier attempts were
# lost too.
STAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
# Writes that must happen eventually (audit, compensation): retry until they do.
PERSISTENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)

# A move's workflow task: replaying a move's history (a few hundred events) takes milliseconds,
# so a task left on a worker that died is given back after 5 s instead of the server's 10 s.
# The wave keeps the default: its history grows with its rows, and its replay with it.
MOVE_TASK_TIMEOUT = timedelta(seconds=5)

# Detection as moves begun before "detect-apart" do it (portal, then probe, in the wait itself):
# their old few quick retries, so that a round with a source down still ends in about a minute
# and a confirm is seen then.
SEQUENTIAL_DETECT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
)

# A check a person waits for (a confirm's recheck of the Whitelist): one attempt, whose failure is
# the answer at once; the regular checks that follow retry as a stage does.
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)

# One audit row, one page of wave rows: a database write or read without heartbeat. Measured
# (bench/chaos.py --moves 20, calm wave on SQLite, 2 cores, start to completion as the server
# saw it): record_transition p50 0.12 s, p99 0.29 s, max 0.32 s (320 writes). 3 s is ten
# times that; a write that takes longer, or one lost with its worker, is tried again 3 s later
# (it is idempotent by event id).
AUDIT_TIMEOUT = timedelta(seconds=3)
# A guard's schedule made (one call to the Temporal frontend) and its row written.
SCHEDULE_TIMEOUT = timedelta(seconds=30)
# One e-mail through the relay: it beats, so this only bounds a hung attempt (smtp.timeout is
# 30 s per SMTP command).
NOTIFY_TIMEOUT = timedelta(seconds=60)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def stage_activity(timeout: timedelta, timings: Timings) -> workflow.ActivityConfig:
    """A stage's activity (and a guard's, a mail's): it beats, and is retried within
    `timing.retry_limit` beyond its own timeout, so one whole attempt always fits."""
    return workflow.ActivityConfig(
        start_to_close_timeout=timeout,
        schedule_to_close_timeout=timeout + seconds(timings.retry_limit),
        heartbeat_timeout=seconds(timings.heartbeat_timeout),
        retry_policy=STAGE_RETRY,
    )


def polling_timeout(window_seconds: float) -> timedelta:
    """A polling activity gets its window plus room for one slow round."""
    return timedelta(seconds=window_seconds + 30)
