"""``python -m nanobanana_queue.emulator --port 8787 ...``: the same command as ``nbq emulator``."""

from __future__ import annotations

import typer

from nanobanana_queue.emulator.cli import emulator

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(emulator)

if __name__ == "__main__":
    app()
