"""The benchmarks are code too: each one must at least start, so a move of the modules it
imports (the layers of issue 17 broke three of them unnoticed) fails here, not on the day
someone wants a figure."""

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.slow  # a Python process a script, each importing most of mailmove: 14 s in all

SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "noop_wave.py")


def test_every_benchmark_is_listed():
    assert SCRIPTS == ["chaos.py", "codec.py", "dashboard.py", "propagation.py", "survey.py", "wave.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_imports_what_it_needs_and_reads_its_arguments(script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout, done.stdout
