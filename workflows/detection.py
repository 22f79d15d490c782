"""Detection of what the centre did: its sources asked independently, none waiting for another.

The sources (the portal's status of a filed request, the RCPT probe at the gateway MX) each
run as their own activity with their own bound (`timing.detect_timeout`, retries included).
A round starts every source that is not still being asked and ends as soon as one of them
has seen it, when all have answered, when `done()` (a person's confirm, a cancel) or after
`min(probe_interval, detect_timeout)`: a source still asking then carries over to the next
round instead of being asked twice, so a dead SMTP listener never delays the portal's answer,
nor the portal a confirm.

When the wait is over, a source still asking is left to end by itself (within its bound): it
only reads, and no cancel is sent for it. A cancel that crosses the source's own answer is
refused by the time-skipping test server (ACTIVITY_UNKNOWN, temporalio/sdk-java#2391), which
then never completes that workflow task nor lets its clock run again; the real server takes
it, but gains nothing from it. Moves begun before "detect-leave" still cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from mailmove.base.model import PortalReceipt, Timings
    from mailmove.base.vocabulary import PORTAL_CONFIRMED
    from workflows import policy


@dataclass
class Source:
    name: str  # for people: "portal", "RCPT probe"
    start: Callable[[], workflow.ActivityHandle]
    read: Callable[[Any], str]  # its answer -> how the centre's work was seen, or ""


class Detection:
    def __init__(self, timings: Timings):
        self.heartbeat = policy.seconds(timings.heartbeat_timeout)
        self.bound = policy.seconds(timings.detect_timeout)
        self.within = min(timings.probe_interval, timings.detect_timeout)
        self.asking: dict[str, workflow.ActivityHandle] = {}

    def source(self, name: str, method: Callable, arg: Any, timeout: float, read: Callable[[Any], str]) -> Source:
        """An activity as a source: it beats, is retried within `detect_timeout`, and is left
        at once when the round no longer needs it (a read has no effect to wait for)."""

        def start() -> workflow.ActivityHandle:
            return workflow.start_activity_method(
                method,
                arg,
                start_to_close_timeout=policy.seconds(timeout),
                schedule_to_close_timeout=self.bound,
                heartbeat_timeout=self.heartbeat,
                retry_policy=policy.STAGE_RETRY,
                cancellation_type=(
                    workflow.ActivityCancellationType.ABANDON
                    if workflow.patched("detect-leave")
                    else workflow.ActivityCancellationType.TRY_CANCEL
                ),
            )

        return Source(name, start, read)

    async def round(
        self, sources: list[Source], done: Callable[[], bool]
    ) -> tuple[str, list[tuple[str, BaseException]]]:
        """How it was seen ("" if not yet), and each source that failed with its error."""
        readers = {s.name: s.read for s in sources}
        found: list[str] = []
        failed: list[tuple[str, BaseException]] = []

        def settled() -> bool:
            for name, handle in list(self.asking.items()):
                if handle.done():
                    del self.asking[name]
                    if (err := handle.exception()) is not None:
                        failed.append((name, err))
                    elif how := readers[name](handle.result()):
                        found.append(how)
            return bool(found) or not self.asking or done()

        settled()  # what came in since the last round may be the answer already
        if not found and not done():
            for source in sources:
                if source.name not in self.asking:
                    self.asking[source.name] = source.start()
            try:
                await workflow.wait_condition(settled, timeout=self.within)
            except TimeoutError:
                pass
        return (found[0] if found else ""), failed

    def stop(self) -> None:
        """Leave the sources still asking: the wait is over (their answers are not read)."""
        for handle in self.asking.values():
            handle.cancel()
            handle.add_done_callback(_ignored)
        self.asking.clear()


def _ignored(handle: workflow.ActivityHandle) -> None:
    """A source left is not waited for: its end (cancelled, as a rule) is of no interest."""
    if not handle.cancelled():
        handle.exception()


def portal_reading(receipt: PortalReceipt) -> Callable[[str], str]:
    """The portal's status of `receipt` -> how the registration was seen, or ""."""
    return lambda state: f"the portal confirmed request {receipt.reference}" if state == PORTAL_CONFIRMED else ""
