"""``nbq bench``: run the benchmark suite (B1–B6) against throwaway local services."""

from __future__ import annotations

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
    from benchmarks.runner import execute
    from benchmarks.scale import SCALES

    if scale not in SCALES:
        raise typer.BadParameter(f"--scale must be one of {', '.join(sorted(SCALES))}")
    raise typer.Exit(execute(only, scale, patched))
