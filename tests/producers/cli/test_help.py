"""Every ``nbq`` help page, as an 80-column terminal shows it: every option's name whole,
no reST markup, arguments named the usual way, no ``<bool>`` placeholder."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import typer

from nanobanana_queue.producers.cli.main import app
from tests.producers.cli.conftest import Nbq


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(group, "commands"):  # a group (typer vendors its own click)
        for name, command in sorted(group.commands.items()):
            found += _commands(command, (*path, name))
    return found


def _command(path: tuple[str, ...]) -> Any:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


COMMANDS = _commands(typer.main.get_command(app))


def test_the_walk_finds_every_command_and_subcommand() -> None:
    assert (
        ("submit",) in COMMANDS
        and (
            "dead",
            "purge",
        )
        in COMMANDS
        and () in COMMANDS
    )
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "nbq")
def test_a_help_page_at_80_columns_shows_every_option_name_whole(
    path: tuple[str, ...], redis_env: dict[str, str]
) -> None:
    done = Nbq({}, columns=80)(*path, "--help")
    assert done.code == 0, done.stderr
    page = done.stdout
    assert max(len(line) for line in page.splitlines()) <= 80
    for param in _command(path).params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-"):
                assert name in page, f"{' '.join(path)}: {name} cut:\n{page}"
    assert "``" not in page, page  # reST markup left in a docstring
    assert "{" not in page.split("\n\n", 2)[1], page  # usage line: PROMPT, not {prompt}
    assert "<bool>" not in page
    assert _ragged(page) == [], page


def _ragged(page: str) -> list[str]:
    """Description lines cut short although their paragraph goes on (source line breaks)."""
    prose = [
        line.strip() for line in page.splitlines() if not line.lstrip().startswith(("│", "╭", "╰"))
    ]
    return [
        line
        for line, after in itertools.pairwise(prose)
        if line and after and len(line) < 40 and not line.startswith("Usage:")
    ]
