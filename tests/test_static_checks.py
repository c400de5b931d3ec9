"""The code stays lint-, type- and security-clean: ruff, mypy (strict) and bandit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["workers", "producers", "emulator", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy", *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit_finds_nothing_beyond_the_accepted_list() -> None:
    result = _run("bandit", "-q", "-c", "pyproject.toml", "-r", *PACKAGES[:3])
    assert result.returncode == 0, result.stdout + result.stderr
