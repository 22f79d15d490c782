"""The production image, built and run: deploy/Dockerfile on a local Debian base (no registry is
reachable here; scripts/container-base), each of `mailmove bootstrap`, the worker and the
dashboard in a container of its own with the settings deploy/compose.yaml gives the mailmove
services (the image's user, a read-only root, /tmp on tmpfs, the state folder a volume, the
secrets files under /run/secrets). The containers use the host's network, so everything stays on
127.0.0.1: the test's Temporal dev server and PostgreSQL, and the sandbox (BIND, the portal and
the gateway's stand-ins). A domain move started through the dashboard's API goes to done; the
worker stopped by `podman stop` (SIGTERM) with the portal filing in flight exits 0 at once and
hands the filing back to the next worker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from mailmove.base.config import load_settings
from mailmove.base.model import MoveState
from mailmove.dashboard.auth import issue_token
from mailmove.sandbox.bind import free_port
from tests.support.dashboard import until_healthy, until_state
from tests.support.domain_move import DOMAIN
from tests.support.moves import in_flight, terminate_running
from tests.support.paths import ROOT
from tests.support.payloads import PAYLOAD_KEY
from workflows.domain_move import DomainMoveWorkflow

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.root]

COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
SERVICE = COMPOSE["x-mailmove"]
UID = 10001  # the image's user (deploy/Dockerfile)
PODMAN = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # a TLS-inspecting proxy's CA, if any, is in it
BUILD_TIMEOUT = 900


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=PODMAN, capture_output=True, text=True, timeout=timeout, check=check)


def grace(service: str) -> int:
    """The service's stop_grace_period in compose.yaml, in seconds ("30s")."""
    return int(COMPOSE["services"][service]["stop_grace_period"].removesuffix("s"))


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """deploy/Dockerfile built FROM the local Debian base; removed afterwards."""
    if not shutil.which("podman"):
        pytest.fail("podman is not installed (scripts/setup installs Debian's podman, runc and debootstrap)")
    base = subprocess.run(
        [str(ROOT / "scripts" / "container-base")], env=PODMAN, capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    assert base.returncode == 0, base.stderr[-3000:]
    tag = f"localhost/mailmove-test:{uuid.uuid4().hex[:8]}"
    secret = ["--secret", f"id=pip-cert,src={HOST_CA}"] if HOST_CA.exists() else []
    began = time.monotonic()
    build = podman(
        "build", "--network", "host", "--build-arg", f"BASE={base.stdout.strip()}", *secret,
        "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", tag, str(ROOT),
        timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    print(f"image {tag}: built in {time.monotonic() - began:.0f}s, {size / 1e6:.0f} MB")
    yield tag
    podman("rmi", "--force", tag, check=False)


class Containers:
    """Containers of the image, each named, on the host network, run as compose.yaml runs them."""

    def __init__(self, image: str, config: Path, secrets: Path, var: Path, env: dict[str, str]):
        self.image, self.config, self.secrets, self.var, self.env = image, config, secrets, var, env
        self.prefix = f"mailmove-test-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def options(self, name: str) -> list[str]:
        volume = next(v for v in SERVICE["volumes"] if v.startswith("var:"))
        options = ["--name", name, "--network", "host", "--tmpfs", *SERVICE["tmpfs"]]
        options += ["--read-only"] if SERVICE["read_only"] else []
        options += ["-v", f"{self.var}:{volume.split(':', 1)[1]}", "-v", f"{self.secrets}:/run/secrets:ro"]
        options += [
            "-v",
            f"{self.config}:/etc/mailmove/mailmove.toml:ro",
            "-e",
            "MAILMOVE_CONFIG=/etc/mailmove/mailmove.toml",
        ]
        for key, value in self.env.items():
            options += ["-e", f"{key}={value}"]
        return options

    def run(self, command: str) -> subprocess.CompletedProcess:
        """`command` to its end, in a container removed afterwards."""
        name = f"{self.prefix}-{command}"
        return podman("run", "--rm", *self.options(name), self.image, command, timeout=180, check=False)

    def start(self, command: str, label: str = "") -> str:
        name = f"{self.prefix}-{label or command}"
        podman("run", "--detach", *self.options(name), self.image, command)
        self.names.append(name)
        return name

    def stop(self, name: str, service: str) -> tuple[int, float]:
        """`podman stop` (SIGTERM, SIGKILL after the grace period): the exit code and the seconds taken."""
        began = time.monotonic()
        podman("stop", "--time", str(grace(service)), name, timeout=grace(service) + 30)
        took = time.monotonic() - began
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout), took

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{podman('logs', n, check=False).stderr[-3000:]}" for n in self.names)

    def remove(self) -> None:
        for name in self.names:
            podman("rm", "--force", name, check=False)


def secrets_of(world, folder: Path) -> dict[str, str]:
    """The sandbox's secret files copied for the image's user, as compose.yaml mounts its own
    (/run/secrets), and the variables that point mailmove at them."""
    folder.mkdir(mode=0o500)
    copies = {"tsig.key": world.dns.keyfile, "ca.pem": world.ca_file, "payload.key": PAYLOAD_KEY}
    for name, source in copies.items():
        shutil.copyfile(source, folder / name)
        os.chown(folder / name, UID, UID)
        os.chmod(folder / name, 0o400)
    os.chown(folder, UID, UID)
    return {
        "MAILMOVE_DNS_TSIG_KEYFILE": "/run/secrets/tsig.key",
        "MAILMOVE_SMTP_CA_FILE": "/run/secrets/ca.pem",
        "MAILMOVE_TEMPORAL_ENCRYPTION_KEY_FILES": json.dumps(["/run/secrets/payload.key"]),
    }


async def test_the_image_runs_bootstrap_worker_and_dashboard(image, dev_env, sandbox_factory, postgres_url, tmp_path):
    world = sandbox_factory(confirm_after=1)
    world.registry.respond_after = 120  # recorded at once, answered late: the filing stays in flight
    config = world.write_config(
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"tq-{uuid.uuid4()}",
        portal_mode="http",
        database_url=postgres_url,
        payload_keys=[str(PAYLOAD_KEY)],
    )
    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    os.chown(var, UID, UID)
    listen = f"127.0.0.1:{free_port()}"
    env = {**secrets_of(world, tmp_path / "secrets"), "MAILMOVE_DASHBOARD_LISTEN": listen}
    containers = Containers(image, config, tmp_path / "secrets", var, env)
    wid = ""
    try:
        bootstrap = containers.run("bootstrap")
        assert bootstrap.returncode == 0, bootstrap.stderr[-3000:]
        assert "schema" in bootstrap.stdout and "search attributes" in bootstrap.stdout, bootstrap.stdout

        first = containers.start("worker", "worker-1")
        dashboard = containers.start("dashboard")
        async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=5) as c:
            await until_healthy(c, timeout=90, what="the dashboard container's /healthz")
            for name in (first, dashboard):
                assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
                assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
                written = podman("exec", name, "touch", "/opt/mailmove/written", check=False)
                assert written.returncode != 0 and "Read-only file system" in written.stderr
                assert podman("exec", name, "touch", "/var/lib/mailmove/written").returncode == 0

            # the dashboard made its session secret in the volume: a token signed with it
            settings = load_settings(config, environ={"MAILMOVE_PATHS_VAR": str(var)})
            c.headers["Authorization"] = f"Bearer {issue_token(settings, 'ops', 'operator')}"
            r = await c.post("/api/domain-moves", json={"domain": DOMAIN, "legacy_mx": f"mail.{DOMAIN}"})
            assert r.status_code == 201, r.text
            wid = r.json()["id"]
            handle = dev_env.client.get_workflow_handle_for(DomainMoveWorkflow.run, wid)

            lost = await in_flight(handle, "file_request", timeout=120)
            code, took = containers.stop(first, "worker")
            print(f"podman stop: the worker exited {code} after {took:.1f}s with the filing in flight")
            assert code == 0 and took < 10, containers.logs()

            containers.start("worker", "worker-2")
            await in_flight(handle, "file_request", timeout=30, after=lost.attempt)
            world.registry.respond_after = 0

            await until_state(c, DOMAIN, "done", timeout=180, what="the move done by the worker container")
            assert (await asyncio.wait_for(handle.result(), 60)).state == MoveState.DONE  # closed, too
        assert len(world.registry.requests) == 1  # the retry on the second worker filed nothing twice
        for name, service in ((containers.names[-1], "worker"), (dashboard, "dashboard")):
            code, took = containers.stop(name, service)
            assert code == 0 and took < grace(service), containers.logs()
    except BaseException:
        print(containers.logs())
        raise
    finally:
        containers.remove()
        if wid:
            await terminate_running(dev_env.client, wid)
