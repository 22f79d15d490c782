"""What `mailmove up` makes sure of before it starts anything, so that a second stack (another
folder, another configuration, a second terminal) can never attach to the first one's Temporal:
the state folder is locked, and every port the stack will bind is free, else one line names the
configuration key, the port and, where the system can tell, who holds it."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mailmove.base.config import HostPort, Settings
from mailmove.base.errors import ConfigError

LOCK = "up.lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str


def ports(settings: Settings) -> list[tuple[str, HostPort]]:
    """Every (key, address) the stack binds: the embedded server's frontend and UI unless a
    cluster is configured, and the dashboard."""
    t, bound = settings.temporal, []
    if not t.address:
        bound += [
            ("temporal.embedded_listen", t.embedded_listen),
            ("temporal.embedded_ui_port", HostPort(t.embedded_listen.host, t.embedded_ui_port)),
        ]
    return [*bound, ("dashboard.listen", settings.dashboard.listen)]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port`, from /proc/net/tcp and tcp6 (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holder(port: int) -> Holder | None:
    """The process listening on `port`, where /proc tells (Linux, and a process we may see)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    return Holder(int(proc.name), command)
        except OSError:
            continue
    return None


def _free(address: HostPort) -> bool:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def describe(found: Holder | None) -> str:
    """Who holds a port, in words: another stack's dev server or `up` is named as such."""
    if found is None:
        return "another process"
    words = found.command.split()
    if "start-dev" in words and "--db-filename" in words[:-1]:
        state = words[words.index("--db-filename") + 1]
        return f"the Temporal dev server (pid {found.pid}) of another `mailmove up`, state {state}"
    if "up" in words and any("mailmove" in w for w in words):
        return f"another `mailmove up` (pid {found.pid}: {found.command[:120]})"
    return f"pid {found.pid} ({found.command[:120]})"


def check_ports(settings: Settings) -> None:
    """ConfigError naming the first key whose port is taken, and by whom."""
    for key, address in ports(settings):
        try:
            free = _free(address)
        except OSError as exc:
            raise ConfigError(key, f"{address} cannot be bound here: {exc.strerror or exc}") from None
        if free:
            continue
        raise ConfigError(key, f"port {address.port} of {address} is taken by {describe(holder(address.port))}")


def private_state(var_dir: Path) -> None:
    """The state folder holds audit trails, TU-IDs and histories: 0700, its files 0600, and
    everything this process and its children (the dev server) create there from now on too."""
    os.umask(0o077)
    var_dir = Path(var_dir)
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    var_dir.chmod(0o700)
    for path in var_dir.iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


class StateLock:
    """An exclusive lock on `var/up.lock` for as long as this `up` runs; the file names its pid."""

    def __init__(self, var_dir: Path):
        self.path = Path(var_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                "paths.var", f"{self.path.parent} is in use by another `mailmove up` (pid {other})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock; the file stays for the next `up`
            self.fd = None
