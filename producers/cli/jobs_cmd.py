"""Commands for producers: submit, status, wait, get, batch, cancel, quota, credits."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Filled in with the producer API."""
