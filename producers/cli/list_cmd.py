"""``nbq jobs``: list jobs by state, producer or batch (newest first)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from workers.cli.common import console, emit_error, fail_on_config_error, print_json, shown
from workers.jobs.record import JobRecord
from workers.jobs.state import JobState


def register(app: typer.Typer) -> None:
    app.command("jobs")(jobs)


@fail_on_config_error
def jobs(
    state: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: " + ", ".join(s.value for s in JobState)),
    ] = None,
    producer: Annotated[str | None, typer.Option(help="Only this producer's jobs.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only the jobs of this batch id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List jobs, most recently updated first (active states from their indexes)."""
    from producers.listing import list_jobs
    from workers.runtime import Runtime
    from workers.settings import get_settings

    try:
        wanted = JobState(state) if state else None
    except ValueError:
        emit_error(
            f"--state {state!r} is not a job state ({', '.join(s.value for s in JobState)})",
            code="invalid_state",
            exit_code=2,
            as_json=as_json,
        )
    store = Runtime.from_settings(get_settings()).store
    records = list_jobs(store, state=wanted, producer=producer, batch_id=batch, limit=limit)
    if as_json:
        print_json([r.public_view() for r in records])
        return
    if not records:
        console.print("no jobs match")
        return
    table = Table()
    table.add_column("job_id", no_wrap=True)
    for column in ("state", "progress", "producer", "batch", "updated", "why"):
        table.add_column(column)
    now = time.time()
    for r in records:
        table.add_row(
            shown(r.job_id),
            r.state.value,
            f"{int(r.progress or 0)}%",
            shown(r.producer or ""),
            shown(r.batch_id or ""),
            f"{now - r.updated_at:.0f}s ago",
            shown(_why(r)),
        )
    console.print(table)


def _why(record: JobRecord) -> str:
    """The failure code of a failed job, or why an active one waits."""
    if record.state is JobState.FAILED and record.error:
        return record.error.code
    return record.waiting_reason or ""
