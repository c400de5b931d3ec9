"""Help text fixes: flags show no ``<bool>`` type placeholder (typer 0.29 prints one)."""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_original = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so it has no type to show."""
    if self.is_flag or self.count:
        return None
    return _original(self, ctx)


def install() -> None:
    TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
