"""Optional dependencies, by the packaging extra that installs them.

``pip install nanobanana-queue`` brings only what a producer needs to enqueue; running a
worker, Flower, the metrics exporter, the ingress or the dev stack needs an extra. A
command missing one fails with one line naming the ``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib.util

from nanobanana_queue.workers.settings import ConfigError

#: The modules each extra brings that the code imports (pyproject.toml lists the packages).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "s3": ("minio",),
    "worker": ("minio", "prometheus_client", "flower"),
    "ingress": ("fastapi", "uvicorn"),
    "emulator": ("fastapi", "uvicorn", "PIL"),
    "dev": ("moto", "minio", "flower", "fastapi", "uvicorn", "PIL"),
    "bench": ("moto", "minio", "psutil", "fastapi", "uvicorn", "PIL"),
}


class MissingExtraError(ConfigError, ImportError):
    """A part of the system was asked for whose optional dependencies are not installed."""


def missing_modules(*modules: str) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def extra_missing(extra: str, missing: list[str], *, what: str | None) -> MissingExtraError:
    """The error naming the modules missing and the ``pip install`` that brings them."""
    return MissingExtraError(
        f"{what or 'this'} needs the [{extra}] extra (missing: {', '.join(missing)}): "
        f"pip install 'nanobanana-queue[{extra}]'"
    )


def require_extra(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``modules`` (default: the extra's) import."""
    missing = missing_modules(*(modules or EXTRA_MODULES[extra]))
    if missing:
        raise extra_missing(extra, missing, what=what)
