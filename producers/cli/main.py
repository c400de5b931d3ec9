"""``nbq``: submit, watch and fetch jobs; run workers, Flower, the emulator and the dev stack.

Each command group lives in its own module, registered by the part it belongs to; this
file only assembles them. Every command is listed in every install; one whose extra is
missing says which ``pip install`` it needs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from nanobanana_queue.devstack import bench_cmd
from nanobanana_queue.devstack import cli as devstack_cli
from nanobanana_queue.emulator import cli as emulator_cli
from nanobanana_queue.producers.cli import (
    batch_cmd,
    dead_cmd,
    helpfmt,
    jobs_cmd,
    list_cmd,
    notify_cmd,
    quota_cmd,
    recover_cmd,
    serve_cmd,
)
from nanobanana_queue.workers import cli as workers_cli

helpfmt.install()

app = typer.Typer(
    name="nbq",
    help="nanobanana-queue: a Celery job system for the Evolink Nano Banana 2 Beta API.",
    invoke_without_command=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"nbq {version('nanobanana-queue')}")
        except PackageNotFoundError:  # a checkout run without installing it
            typer.echo("nbq (not installed: version unknown)")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version, exit."
        ),
    ] = False,
) -> None:
    """``nbq`` alone prints the help and exits 0 (it is a question, not a mistake)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


# Registration order is the help's order. Producer-side commands live in producers/cli;
# each other part registers its own: workers (worker, flower, metrics, reconcile), the dev
# stack (dev), the benchmarks (bench), the emulator (emulator).
jobs_cmd.register(app)
recover_cmd.register(app)
list_cmd.register(app)
batch_cmd.register(app)
quota_cmd.register(app)
workers_cli.register(app)
devstack_cli.register(app)
serve_cmd.register(app)
bench_cmd.register(app)
dead_cmd.register(app)
notify_cmd.register(app)
emulator_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
