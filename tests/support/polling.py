"""Waiting for what a server does in its own time."""

from __future__ import annotations

import asyncio
import inspect


async def wait_for(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    """Poll a predicate (sync or async) until it returns a truthy value, and return that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(interval)
