"""``nbq bench``: run the benchmark suite (B1–B6) against throwaway local services.

The benchmarks live in the repository's ``benchmarks/`` and are not part of the installed
package (issue 30: the wheel adds one import name and no result files), so the command is
registered in every install and runs them from a checkout: it imports ``benchmarks`` by
name when called, from the current directory.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from nanobanana_queue.workers.cli.common import fail_on_config_error
from nanobanana_queue.workers.extras import require_extra


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


@fail_on_config_error
def bench(
    only: Annotated[
        str, typer.Option(help="Comma-separated benchmark ids, e.g. B1,B2.")
    ] = "B1,B2,B3,B4,B5,B6",
    scale: Annotated[str, typer.Option(help="small (a few minutes) or full.")] = "small",
    patched: Annotated[
        bool,
        typer.Option(
            "--patched",
            help="Run the workers with benchmarks/patched_worker.py's experimental fixes "
            "applied in memory (to measure a fix before it lands).",
        ),
    ] = False,
) -> None:
    """Benchmarks vs their baselines; prints a table, writes benchmarks/results/latest.json.

    Starts its own redis-server, moto S3, emulator and workers on free loopback ports.
    """
    require_extra("bench", what="nbq bench")
    try:
        execute = importlib.import_module("benchmarks.runner").execute
        scales = importlib.import_module("benchmarks.scale").SCALES
    except ModuleNotFoundError:
        raise typer.BadParameter(
            "nbq bench runs from a checkout of the repository (its benchmarks/ are not in "
            "the installed package): cd to the checkout and run it again"
        ) from None

    if scale not in scales:
        raise typer.BadParameter(f"--scale must be one of {', '.join(sorted(scales))}")
    raise typer.Exit(execute(only, scale, patched))
