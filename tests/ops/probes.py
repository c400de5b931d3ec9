"""Health-check commands of compose and Kubernetes, checked against the image's contents.

A probe command must exist in the project image (its Python, a module of a package the
Dockerfile installs, or a standard Debian tool) and must never ask the broker: no
``celery ... inspect ping`` / ``status`` / ``control``, which broadcast to every worker
over the broker (celery#4079).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

from nanobanana_queue.workers import probes

ROOT = Path(__file__).resolve().parents[2]

#: Executables the image has: its venv's python and nbq, and the base image's shell tools.
IMAGE_EXECUTABLES = frozenset({"python", "nbq", "sh", "test", "stat", "date", "cat"})
#: Words that mean a broadcast or a round trip through the broker.
BROADCAST_WORDS = re.compile(r"\b(inspect|ping|control|status|celery)\b")


def image_packages() -> set[str]:
    """Top-level packages the Dockerfile installs (``pip install .``: setuptools' find)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in include}


def check_exec_probe(argv: list[str], where: str) -> None:
    """Fail unless ``argv`` runs in the image and asks nothing of the broker."""
    assert argv, f"{where}: empty probe command"
    assert argv[0] in IMAGE_EXECUTABLES, f"{where}: {argv[0]} is not in the image"
    text = argv[2] if argv[:2] == ["python", "-c"] else " ".join(argv)
    assert not BROADCAST_WORDS.search(text.replace("/healthcheck", "")), (
        f"{where}: the probe talks to the broker: {text}"
    )
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        assert module.split(".")[0] in image_packages(), f"{where}: {module} not installed"
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        assert module == "nanobanana_queue.workers.probes", (
            f"{where}: unknown probe module {module}"
        )
        # The arguments parse (a missing file is a verdict, 1; a usage error is 2)
        assert probes.main([*argv[3:], "--dir", str(ROOT / "no-such-dir")]) in (0, 1), where
    elif argv[:2] == ["python", "-c"]:
        ast.parse(argv[2])  # valid Python
        assert "127.0.0.1" in argv[2] or "localhost" in argv[2], f"{where}: not local"
