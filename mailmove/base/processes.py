"""Child processes that mailmove starts (the dev server, BIND in the sandbox), and how a
process of its own ends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys


def stop(process: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (Ctrl-C, systemd, Kubernetes), for a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def exit_process(code: int) -> None:
    """End this process now, its output flushed, without the interpreter's shutdown: the
    Temporal client's native threads can crash that (temporalio/sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
