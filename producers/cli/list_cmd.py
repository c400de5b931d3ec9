"""``nbq jobs``: list jobs by state, producer or batch (newest first)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from nanobanana_queue.workers.cli.common import (
    console,
    emit_error,
    fail_on_config_error,
    line,
    print_json,
    shown,
)
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.fairshare import in_flight_text
from nanobanana_queue.workers.visible import visible

if TYPE_CHECKING:
    from nanobanana_queue.workers.runtime import Runtime


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
    from nanobanana_queue.producers.listing import list_jobs
    from nanobanana_queue.workers.runtime import Runtime
    from nanobanana_queue.workers.settings import get_settings

    try:
        wanted = JobState(state) if state else None
    except ValueError:
        emit_error(
            f"--state {state!r} is not a job state ({', '.join(s.value for s in JobState)})",
            code="invalid_state",
            exit_code=2,
            as_json=as_json,
        )
    runtime = Runtime.from_settings(get_settings())
    records = list_jobs(runtime.store, state=wanted, producer=producer, batch_id=batch, limit=limit)
    if as_json:
        print_json([r.public_view() for r in records])
        return
    if not records:
        console.print("no jobs match")
    else:
        console.print(jobs_table(records, now=time.time()))
    if producer is not None:
        console.print(producer_share_line(runtime, producer))


def producer_share_line(runtime: Runtime, producer: str) -> Text:
    """``--producer``'s place in the fair share (workers/resilience/fairshare.py): its
    jobs waiting per priority, its share of creates among the producers waiting now and
    its jobs in flight (the same figures as ``nbq quota``)."""
    fair = runtime.fair()
    for share in fair.snapshot():
        if share.producer == producer:
            counts = ", ".join(f"{n} {priority}" for priority, n in share.waiting.items())
            return line(
                "producer ",
                producer,
                f": waiting {counts}; share of creates {share.share:.0%} "
                f"(weight {share.weight:g})" + in_flight_text(fair, share.in_flight, "; "),
            )
    return line(
        "producer ", producer, f": nothing waiting for a create (weight {fair.weight(producer):g})"
    )


def jobs_table(records: list[JobRecord], *, now: float) -> Table:
    """Two lines a job, readable at 80 columns: the id over its prompt (cut to the id's
    width), the state over why (a failure's code, or why a queued job waits); producer
    and batch on a third line when set. Nothing a person needs is ever cut to ``fai…``."""
    id_width = max(max(len(r.job_id) for r in records), 20)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, leading=1)
    table.add_column("job / prompt", no_wrap=True, overflow="fold")
    # Wide enough for its longest word: a reason wraps at spaces, never inside a code.
    words = [w for r in records for w in (r.state.value, *_why(r).split())]
    table.add_column("state / why", overflow="fold", min_width=max(map(len, words)))
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("updated", justify="right", no_wrap=True)
    for r in records:
        job = shown(r.job_id)  # every value a producer sent: escaped, never markup
        prompt = str((r.request or {}).get("prompt", ""))
        if prompt:
            cut = prompt if len(prompt) <= id_width else prompt[: id_width - 1] + "…"
            job.append("\n" + visible(" ".join(cut.split())), style="dim")
        owner = " · ".join(
            part for part in (r.producer and f"producer {r.producer}", r.batch_id and
                              f"batch {r.batch_id}") if part
        )  # fmt: skip
        if owner:
            job.append("\n" + visible(owner), style="dim")
        state = Text(r.state.value, style=_STATE_STYLE.get(r.state, ""))
        if why := _why(r):
            state.append("\n" + visible(why), style="yellow")
        table.add_row(job, state, f"{int(r.progress or 0)}%", _ago(now - r.updated_at))
    return table


_STATE_STYLE = {JobState.STORED: "green", JobState.FAILED: "red", JobState.CANCELLED: "dim"}


def _ago(seconds: float) -> str:
    """``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(int(seconds), 0)}s ago"


def _why(record: JobRecord) -> str:
    """The failure code of a failed job, or why an active one waits."""
    if record.state is JobState.FAILED and record.error:
        return record.error.code
    return record.waiting_reason or ""
