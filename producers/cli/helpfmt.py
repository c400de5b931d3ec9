"""Help text fixes for typer 0.29: flags show no ``<bool>`` type placeholder, usage
lines name arguments the usual way (``nbq submit [OPTIONS] PROMPT``, not ``{prompt}``),
and a docstring's paragraphs are re-flowed to the terminal's width (typer keeps the
source's line breaks after the first paragraph: ragged lines at 80 columns)."""

from __future__ import annotations

from typing import Any

from typer import rich_utils
from typer.core import TyperArgument, TyperOption

_original = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so it has no type to show."""
    if self.is_flag or self.count:
        return None
    return _original(self, ctx)


def _usage_display_name(self: TyperArgument) -> str:
    """``PROMPT`` when required, ``[OUTPUT]`` when not (typer 0.29 prints ``{prompt}``)."""
    name = (self.metavar or self.display_name_raw).upper()
    if not self.required:
        name = f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _fix_linebreaks(paragraphs: list[str], markup_mode: Any) -> str:
    """One line per paragraph (the terminal wraps it); ``\b`` keeps a paragraph as is."""
    return "\n\n".join(
        p if p.lstrip().startswith("\b") else " ".join(p.split("\n")) for p in paragraphs
    )


def install() -> None:
    TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
    TyperArgument._usage_display_name = _usage_display_name  # type: ignore[method-assign]
    rich_utils._fix_linebreaks = _fix_linebreaks
