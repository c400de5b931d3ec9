"""``nbq``: submit, watch and fetch jobs; run workers, Flower, the emulator and the dev stack.

Each command group lives in its own module; this file only assembles them.
"""

from __future__ import annotations

import typer

from producers.cli import (
    batch_cmd,
    bench_cmd,
    dead_cmd,
    dev_cmd,
    helpfmt,
    jobs_cmd,
    list_cmd,
    ops_cmd,
    quota_cmd,
    recover_cmd,
    serve_cmd,
)

helpfmt.install()

app = typer.Typer(
    name="nbq",
    help="nanobanana-queue: a Celery job system for the Evolink Nano Banana 2 Beta API.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    """``nbq`` alone prints the help and exits 0 (it is a question, not a mistake)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


jobs_cmd.register(app)
recover_cmd.register(app)
list_cmd.register(app)
batch_cmd.register(app)
quota_cmd.register(app)
ops_cmd.register(app)
dev_cmd.register(app)
serve_cmd.register(app)
bench_cmd.register(app)
dead_cmd.register(app)


def _register_optional() -> None:
    """Commands whose modules may be absent in a slim install stay optional."""
    try:
        from emulator.cli import emulator
    except ImportError:  # pragma: no cover - the emulator ships with the project
        return
    app.command("emulator", help="Run the Evolink API emulator (for tests and local runs).")(
        emulator
    )


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    app()
