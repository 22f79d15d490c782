"""Timeouts and retry policies of every activity, in one place."""

from datetime import timedelta

from temporalio.common import RetryPolicy

# A stage's activity: a few quick retries, then the stage waits for a postmaster's retry.
STAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
)
# Writes that must happen eventually (audit, compensation): retry until they do.
PERSISTENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)

AUDIT_TIMEOUT = timedelta(seconds=30)
NOTIFY_TIMEOUT = timedelta(seconds=60)  # one e-mail through the relay


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def polling_timeout(window_seconds: float) -> timedelta:
    """A polling activity gets its window plus room for one slow round."""
    return timedelta(seconds=window_seconds + 30)
