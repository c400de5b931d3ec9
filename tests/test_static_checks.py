"""The code stays lint-, format-, type- and security-clean: ruff, mypy and bandit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: ruff, mypy and bandit as processes: checks of the code, not its logic.
pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["workers", "producers", "emulator", "devstack", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_would_change_nothing() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_finds_nothing_strict_in_the_packages_and_in_the_tests() -> None:
    # pyproject's `files`: the packages and the tests (those with its tests.* override).
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit_finds_nothing_beyond_the_accepted_list() -> None:
    result = _run("bandit", "-q", "-c", "pyproject.toml", "-r", *PACKAGES[:4])
    assert result.returncode == 0, result.stdout + result.stderr
