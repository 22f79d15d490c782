"""Start-up that cannot attach to the wrong stack: a second `mailmove up` on another state
folder with the same ports, or on the same state folder, is refused before it starts anything
(exit 2, one line naming the key and who holds it) and the first stack goes on serving; a
worker with other zones does not join a task queue that another configuration's worker polls;
the tests' PostgreSQL is a cluster of their own unless one is named."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from mailmove.base.config import load_settings
from mailmove.base.errors import ConfigError
from mailmove.base.fingerprint import check_task_queue
from mailmove.sandbox.world import free_port
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.postgres_cluster import throwaway_cluster
from tests.support.processes import kill, mailmove_sync, move_done, start_up, start_worker
from tests.support.settings import settings_for

DOMAIN = "chem.sandbox.test"


def up_once(config: Path) -> subprocess.CompletedProcess:
    """`mailmove up` that is expected to stop by itself (refused)."""
    return subprocess.run(
        [sys.executable, "-m", "mailmove.cli", "--config", str(config), "up"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def beside(first: Path, world_root: Path, **replace: str) -> Path:
    """Another stack's configuration: `first`'s, with its own state folder and store, and
    `replace`'s lines (a key = value line of `first` by its key)."""
    text = first.read_text()
    old_var = re.search(r'^var = "(.*)"$', text, re.M).group(1)
    text = text.replace(old_var, str(world_root / "var"))
    for key, line in replace.items():
        text = re.sub(rf"^{key} = .*$", line, text, count=1, flags=re.M)
    path = world_root / "second.toml"
    path.write_text(text)
    return path


def file_modes(folder: Path) -> dict[str, int]:
    """Each file's permission bits; a file gone between the listing and its stat (SQLite's
    journal, which lives for one transaction) is left out."""
    modes = {}
    for p in folder.iterdir():
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            modes[p.name] = stat.S_IMODE(st.st_mode)
    return modes


@pytest.mark.temporal  # `mailmove up` starts its own
async def test_a_second_up_is_refused_and_the_first_goes_on(sandbox_factory, tmp_path):
    first_world = sandbox_factory(confirm_after=1)
    first = first_world.write_config(portal_mode="http")
    stack = await start_up(first)
    try:
        settings = load_settings(first)
        # the state (audit trail, histories, keys) is the stack's user's alone
        assert stat.S_IMODE(settings.var_dir.stat().st_mode) == 0o700
        modes = file_modes(settings.var_dir)
        assert {"mailmove.db", "temporal.db", "temporal.log", "payload-key", "up.lock"} <= set(modes)
        assert [name for name, mode in modes.items() if mode & 0o077] == []
        (tmp_path / "other").mkdir()

        # another folder, the same ports: refused at the first port, naming its key and holder
        same_ports = up_once(beside(first, tmp_path / "other"))
        assert same_ports.returncode == 2, same_ports.stderr
        assert "temporal.embedded_listen" in same_ports.stderr and "another `mailmove up`" in same_ports.stderr
        assert "Traceback" not in same_ports.stderr and len(same_ports.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "other" / "var" / "temporal.db").exists()  # nothing was started

        # only the dashboard's port is the first stack's
        ports = {
            "embedded_listen": f'embedded_listen = "127.0.0.1:{free_port()}"',
            "embedded_ui_port": f"embedded_ui_port = {free_port()}",
        }
        (tmp_path / "dash").mkdir()
        dashboard_only = up_once(beside(first, tmp_path / "dash", **ports))
        assert dashboard_only.returncode == 2 and "dashboard.listen" in dashboard_only.stderr, dashboard_only.stderr
        assert f"port {settings.dashboard.listen.port}" in dashboard_only.stderr

        # the same state folder: refused with the first one's pid
        again = up_once(first)
        assert again.returncode == 2 and "paths.var" in again.stderr and f"pid {stack.pid}" in again.stderr

        # the first stack is untouched: it still runs a whole move
        mailmove_sync(first, "domain", "start", DOMAIN, "--legacy-mx", f"mail.{DOMAIN}")
        await wait_for(lambda: move_done(first), timeout=90, what="the first stack's move")
    finally:
        stack.send_signal(signal.SIGINT)
        assert stack.wait(30) == 0


async def test_a_worker_of_another_deployment_does_not_join_the_queue(dev_env, sandbox_factory, caplog):
    one = sandbox_factory(confirm_after=1)
    other = sandbox_factory(confirm_after=1, domains=("phys.sandbox.test",))
    settings = settings_for(one, dev_env)
    alike = load_settings(
        one.write_config(
            one.root / "alike.toml",
            temporal_address=settings.temporal.address,
            task_queue=settings.temporal.task_queue,
            payload_keys=list(settings.temporal.encryption_key_files),
        )
    )
    unlike = settings_for(other, dev_env, task_queue=settings.temporal.task_queue)
    first = start_worker(settings.source)  # a process of its own: this one's own identity is skipped
    try:

        async def polled() -> bool:
            try:
                await check_task_queue(dev_env.client, unlike)
            except ConfigError:
                return True
            return False

        await wait_for(polled, 20, what="the first worker to be seen polling")
        with pytest.raises(ConfigError) as caught:
            await check_task_queue(dev_env.client, unlike)
        assert caught.value.field == "dns.zones" and f"worker {first.pid}@" in str(caught.value)
        await check_task_queue(dev_env.client, alike)  # the same settings from another file: welcome
        # the same store with other zones: this deployment in a rolling update, logged, not refused
        rolling = dataclasses.replace(settings, dns=dataclasses.replace(settings.dns, zones=()))
        with caplog.at_level(logging.WARNING, logger="mailmove.worker"):
            await check_task_queue(dev_env.client, rolling)
        assert "dns.zones" in caplog.text and "rolling update" in caplog.text

        # and the command: `mailmove worker` with the other zones exits 2 before it polls
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailmove.cli", "--config", str(unlike.source), "worker",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 2 and "dns.zones" in err.decode() and "Traceback" not in err.decode()
    finally:
        kill(first)


async def test_a_namespace_the_cluster_lacks_is_named(dev_env, sandbox_factory):
    world = sandbox_factory()
    settings = settings_for(world, dev_env)
    elsewhere = world.root / "nowhere.toml"
    elsewhere.write_text(settings.source.read_text().replace('namespace = "default"', 'namespace = "nowhere"'))
    with pytest.raises(ConfigError) as caught:
        await check_task_queue(dev_env.client, load_settings(elsewhere))
    assert caught.value.field == "temporal.namespace"


@pytest.mark.postgres
@pytest.mark.slow
def test_the_tests_postgresql_is_their_own(monkeypatch):
    """What a machine without a PostgreSQL server gets: initdb on a free port, gone afterwards."""
    monkeypatch.delenv("MAILMOVE_TEST_POSTGRES", raising=False)
    with throwaway_cluster() as admin:
        assert ":5432/" not in admin
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            folder = Path(conn.execute("show data_directory").fetchone()[0])
        assert folder.exists()
    assert not folder.exists()
