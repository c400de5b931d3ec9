"""A part whose optional dependencies are missing says which ``pip install`` brings them.

``pip install nanobanana-queue`` is the producer's install; every ``nbq`` command is still
listed, and one that needs an extra fails with one line naming it (exit status 2).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from typer.testing import CliRunner

from nanobanana_queue.producers.cli.main import app
from nanobanana_queue.workers.extras import EXTRA_MODULES, MissingExtraError, require_extra


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in names else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_missing_module_names_its_extra_and_the_install_command() -> None:
    with pytest.raises(MissingExtraError) as refused:
        require_extra("worker", "no_such_module_nbq", what="nbq worker")
    assert str(refused.value) == (
        "nbq worker needs the [worker] extra (missing: no_such_module_nbq): "
        "pip install 'nanobanana-queue[worker]'"
    )
    assert isinstance(refused.value, ImportError)


def test_the_test_environment_has_every_extra() -> None:
    for extra in EXTRA_MODULES:
        require_extra(extra)


@pytest.mark.parametrize(
    ("command", "extra", "module"),
    [
        (["worker"], "worker", "minio"),
        (["flower", "--no-auth"], "worker", "flower"),
        (["metrics"], "worker", "prometheus_client"),
        (["reconcile", "--once"], "worker", "minio"),
        (["serve"], "ingress", "fastapi"),
        (["dev"], "dev", "moto"),
        (["bench"], "bench", "psutil"),
        (["emulator"], "emulator", "PIL"),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, command: list[str], extra: str, module: str
) -> None:
    _hide(monkeypatch, module)
    monkeypatch.setenv("NBQ_EVOLINK_API_KEY", "test-key-not-real")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert f"pip install 'nanobanana-queue[{extra}]'" in " ".join(result.output.split())
    assert f"missing: {module}" in result.output
