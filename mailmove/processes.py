"""Child processes that mailmove starts (the dev server, BIND in the sandbox)."""

from __future__ import annotations

import subprocess


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
