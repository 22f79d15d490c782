"""A real Postfix of the test's own: its configuration, queue and data directories and its log
in one folder, `postfix -c DIR start`ed as root, its SMTP listener on a free loopback port
(never 25), every service unchrooted; the machine's own Postfix is neither used nor started.
Given `hosts`, it runs in a mount namespace of its own whose /etc/hosts names them (the
sandbox's relay names, which no system resolver knows), looked up natively."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mailmove.base.config import AgentConfig
from mailmove.base.postfix import explicit
from mailmove.sandbox.bind import free_port

MASTER_CF = Path("/etc/postfix/master.cf")  # Debian's, installed unconfigured by scripts/setup
# a service line: name, type, private, unpriv, chroot, ...
_SERVICE = re.compile(r"^(\S+\s+(?:unix|unix-dgram|inet|fifo|pass)\s+\S+\s+\S+\s+)\S+")


@dataclass
class LocalPostfix:
    root: Path
    port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "conf"

    @property
    def log(self) -> Path:
        return self.root / "maillog"

    def agent(self, **overrides) -> AgentConfig:
        """The host agent's configuration for this Postfix."""
        agent = AgentConfig(**self.agent_settings())
        return replace(agent, **overrides)

    def agent_settings(self) -> dict:
        """Those settings as the `[agent]` table of a configuration file names them."""
        return {
            "postfix_config_dir": str(self.config_dir),
            "postfix_smtp_port": self.port,
            "postfix_log": str(self.log),
            "postfix_probe_wait": 30.0,
        }

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["postfix", "-c", str(self.config_dir), *args], capture_output=True, text=True, timeout=60, check=check
        )

    def explicit(self) -> dict[str, str | None]:
        """main.cf's own values of what the agent may set, read with the real `postconf -n`."""
        ran = subprocess.run(["postconf", "-c", str(self.config_dir), "-n"], capture_output=True, text=True, check=True)
        return explicit(ran.stdout)

    def running(self) -> bool:
        return self.postfix("status", check=False).returncode == 0

    def stop(self) -> None:
        if self.running():
            self.postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postfix(main_cf: str = "", start: bool = True, hosts: dict[str, str] | None = None) -> LocalPostfix:
    """A Postfix whose main.cf has the base settings and then `main_cf`'s lines. Its folder is
    under /tmp, traversable by the `postfix` user (pytest's own folders are root's alone).
    `hosts`: names and their addresses, for its SMTP client only (module docstring)."""
    root = Path(tempfile.mkdtemp(prefix="mailmove-postfix-"))
    root.chmod(0o755)
    local = LocalPostfix(root, free_port())
    conf, data = local.config_dir, root / "data"
    conf.mkdir()
    (root / "queue").mkdir()
    data.mkdir()
    shutil.chown(data, "postfix")
    (conf / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {data}
myhostname = mx2.chem.sandbox.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {local.log}
maillog_file_prefixes = {root}
{"smtp_host_lookup = native" if hosts else ""}
{main_cf}"""
    )
    services = [_SERVICE.sub(r"\1n", line) for line in MASTER_CF.read_text().splitlines()]
    services = [line for line in services if not re.match(r"smtp\s+inet\s", line)]
    (conf / "master.cf").write_text("\n".join(services) + f"\n127.0.0.1:{local.port} inet n - n - - smtpd\n")
    if start:
        started = local.postfix("start", check=False) if hosts is None else _start_with_hosts(local, hosts)
        if started.returncode != 0:
            log = local.log.read_text() if local.log.exists() else ""
            local.stop()
            raise RuntimeError(f"postfix start failed: {started.stderr}{log}")
    return local


def _start_with_hosts(local: LocalPostfix, hosts: dict[str, str]) -> subprocess.CompletedProcess:
    """`postfix start` in a mount namespace where /etc/hosts is a file of its own: the master
    and every process it starts stay there; the agent's commands reach it from outside."""
    file = local.root / "hosts"
    file.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in hosts.items()))
    file.chmod(0o644)
    script = 'mount --bind "$1" /etc/hosts && exec postfix -c "$2" start'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(file), str(local.config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
