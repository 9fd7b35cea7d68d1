"""CI's own contract: without Chromium the browser test skips with its reason on a developer's
machine, and fails the run where MTZ_REQUIRE_BROWSER=1 (what `.ci/run` sets)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _browser_tests(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/browser"],
        cwd=ROOT,
        env={**os.environ, "MTZ_CHROMIUM": "/nonexistent/chromium", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("required", ["0", "1"])
def test_a_missing_browser_skips_locally_and_fails_in_ci(required):
    done = _browser_tests(MTZ_REQUIRE_BROWSER=required)
    out = done.stdout + done.stderr
    assert "/nonexistent/chromium is missing" in out
    if required == "1":
        assert done.returncode != 0 and "MTZ_REQUIRE_BROWSER=1" in out
    else:
        assert done.returncode in (0, 5) and "skipped" in out  # 5: nothing else collected


def test_ci_runs_the_readme_commands_and_requires_the_browser():
    script = (ROOT / ".ci" / "run").read_text()
    assert "export MTZ_REQUIRE_BROWSER=1" in script
    assert "make test\n" in script and "make test-other-cpu" in script
    makefile = (ROOT / "Makefile").read_text()
    assert "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2" in makefile
