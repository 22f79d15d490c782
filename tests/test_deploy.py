"""deploy/ checked without a container engine: the Compose file against the compose-spec schema
(check-jsonschema), the Kubernetes manifests against the API's schemas (kubernetes-validate,
strict), the systemd units by `systemd-analyze verify`; every MAILMOVE_* variable they set is a
configuration key mailmove accepts, secrets are files, and every grace period outlasts the
worker's own shutdown."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mailmove.base.config import environment_overrides, parse_settings
from mailmove.worker import GRACEFUL_SHUTDOWN
from tests.support.paths import BIN, ROOT

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_compose_file_follows_the_compose_spec(tmp_path):
    checked = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "compose.yaml"  # the check can fail: a misspelt key does
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    assert run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken).returncode != 0


def test_the_kubernetes_manifests_validate_strictly(tmp_path):
    checked = run(BIN / "kubernetes-validate", "--strict", *MANIFESTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {d["kind"] for m in MANIFESTS for d in documents(m)} == {"ConfigMap", "Deployment", "Service", "Job"}
    broken = tmp_path / "worker.yaml"
    broken.write_text((DEPLOY / "k8s" / "worker.yaml").read_text().replace("replicas:", "replica:"))
    assert run(BIN / "kubernetes-validate", "--strict", broken).returncode != 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_verify(tmp_path):
    """With this checkout as the install prefix, so the executables the units name exist."""
    paths = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/mailmove/.venv", str(ROOT / ".venv")).replace("/opt/mailmove", str(ROOT))
        name = unit.name.replace("@.service", "@mx2.example.org.service")
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    verified = run("systemd-analyze", "verify", *paths)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def variables() -> dict[str, str]:
    """Every environment variable deploy/ gives mailmove: Compose, the ConfigMap, the pods, the units."""
    found: dict[str, str] = {}
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for service in compose["services"].values():
        found |= {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("MAILMOVE_")}
    for manifest in MANIFESTS:
        for doc in documents(manifest):
            if doc["kind"] == "ConfigMap":
                found |= {k: v for k, v in doc["data"].items() if k.startswith("MAILMOVE_")}
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                found |= {e["name"]: e["value"] for e in container.get("env", []) if e["name"].startswith("MAILMOVE_")}
    for unit in UNITS:
        for name, value in re.findall(r"^Environment=(MAILMOVE_\w+)=(.*)$", unit.read_text(), re.M):
            found[name] = value
    return found


def test_every_variable_is_a_configuration_key_and_secrets_are_files():
    found = variables()
    assert {"MAILMOVE_TEMPORAL_ADDRESS", "MAILMOVE_DATABASE_URL", "MAILMOVE_DNS_TSIG_KEYFILE"} <= set(found)
    config = found.pop("MAILMOVE_CONFIG", None)
    assert config in (None, "/etc/mailmove/mailmove.toml")
    settings = parse_settings(environment_overrides({}, found))  # a ConfigError names a wrong one
    assert settings.temporal.address and settings.database.url.startswith("postgresql://")
    assert "@" in settings.database.url and ":" not in settings.database.url.split("//")[1].split("@")[0]  # no password
    for name, value in found.items():
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", name):
            paths = json.loads(value) if name.endswith("_FILES") else [value]
            assert name.endswith(("_FILE", "_KEYFILE", "_FILES")), name
            assert paths and all(p.startswith(("/", "%d/")) for p in paths), name


def test_production_runs_two_workers():
    """A lost worker is covered by the other at once (docs/recovery.md): with one, every kill
    stops all moves until a new process has started and replayed them."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2
    workers = [
        d for m in MANIFESTS for d in documents(m) if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]
    ]
    assert workers and all(d["spec"]["replicas"] >= 2 for d in workers)


def test_every_grace_period_outlasts_the_workers_shutdown():
    grace = GRACEFUL_SHUTDOWN.total_seconds()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("worker", "dashboard"):
        assert int(compose["services"][name]["stop_grace_period"].rstrip("s")) > grace
    for manifest in MANIFESTS:
        for doc in documents(manifest):
            if doc["kind"] == "Deployment":
                assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    for unit in UNITS:
        assert int(re.search(r"^TimeoutStopSec=(\d+)$", unit.read_text(), re.M).group(1)) > grace


def test_the_temporal_values_use_postgresql_and_no_inline_password():
    values = yaml.safe_load((DEPLOY / "helm" / "temporal-values.yaml").read_text())
    persistence = values["server"]["config"]["persistence"]
    for store in ("default", "visibility"):
        sql = persistence[store]["sql"]
        assert sql["driver"] == "postgres12" and sql["existingSecret"] and "password" not in sql
    assert not values["cassandra"]["enabled"] and not values["elasticsearch"]["enabled"]
    assert values["server"]["dynamicConfig"]["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
