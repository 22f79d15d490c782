"""mailmove's own programs run as processes, the way an operator runs them: the CLI, `worker.py`
(a worker, or with `--host FQDN` a host agent) and `mailmove up`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.domain_move import DOMAIN
from tests.support.paths import ROOT
from tests.support.polling import wait_for


async def mailmove(config: Path, *args: str) -> tuple[int, str, str]:
    """The CLI, awaited: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailmove.cli",
        "--config",
        str(config),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def mailmove_sync(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI, blocking (for a poll's predicate); a failure raises unless `check` is off."""
    result = subprocess.run(
        [sys.executable, "-m", "mailmove.cli", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mailmove {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def move_done(config: Path) -> bool:
    """Whether `mailmove show` reports the domain move of DOMAIN done."""
    result = mailmove_sync(config, "show", DOMAIN, "--json", check=False)
    return result.returncode == 0 and (json.loads(result.stdout).get("status") or {}).get("state") == "done"


def start_worker(config: Path, *args: str) -> subprocess.Popen:
    """`worker.py` as its own process (`--host FQDN`: a host agent)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), "--config", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(config.parent / "worker.log", "ab"),
    )


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


async def start_up(config: Path) -> subprocess.Popen:
    """`mailmove up` in a process of its own, once it has printed its addresses."""
    log_file = config.parent / "up.log"
    log_file.write_text("")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailmove.cli", "--config", str(config), "up"],
        cwd=ROOT,
        stdout=open(log_file, "a"),
        stderr=subprocess.STDOUT,
    )
    await wait_for(lambda: "Ctrl-C stops all of it" in log_file.read_text(), timeout=60, what="up")
    return process
