"""``nbq batch FILE.jsonl``: enqueue many, watch them with a live progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers.batch import BadLine, parse_jsonl
from producers.cli.common import console, err_console, fail_on_config_error
from producers.errors import ProducerError
from workers.jobs.record import JobRecord
from workers.jobs.state import JobState

if TYPE_CHECKING:
    from producers.api import Producer


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)


@fail_on_config_error
def batch(
    file: Annotated[Path, typer.Argument(help="JSONL: one request object per line ('-' = stdin).")],
    wait_: Annotated[bool, typer.Option("--wait", help="Follow the jobs until they end.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    results: Annotated[Path | None, typer.Option(help="Write results as JSONL here.")] = None,
) -> None:
    """Enqueue one job per line; bad lines are reported with their number and skipped."""
    from producers.api import Producer

    lines = sys.stdin if str(file) == "-" else file.open(encoding="utf-8")
    producer = Producer()
    job_ids: list[str] = []
    bad = 0
    with lines:
        for item in parse_jsonl(lines):
            if isinstance(item, BadLine):
                bad += 1
                err_console.print(f"[yellow]line {item.line_no}:[/yellow] {item.error}")
                continue
            try:
                job_ids.append(producer.enqueue(item.request, job_id=item.job_id).job_id)
            except ProducerError as exc:
                bad += 1
                err_console.print(f"[yellow]line {item.line_no}:[/yellow] {exc}")
    console.print(f"enqueued {len(job_ids)} job(s), skipped {bad} bad line(s)")
    records = {job_id: producer.status(job_id) for job_id in job_ids}
    if wait_ and job_ids:
        records = _follow(producer, job_ids, timeout)
    _summary(records)
    out = results.open("w", encoding="utf-8") if results else None
    for record in records.values():
        line = json.dumps(record.public_view(), sort_keys=True)
        if out:
            out.write(line + "\n")
        elif not wait_:
            typer.echo(line)
    if out:
        out.close()
    if wait_ and any(r.state is not JobState.STORED for r in records.values()):
        raise typer.Exit(1)


def _follow(producer: Producer, job_ids: list[str], timeout_s: float) -> dict[str, JobRecord]:
    records: dict[str, JobRecord] = {}
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "stored {task.fields[stored]} · failed {task.fields[failed]} · "
            "in flight {task.fields[inflight]}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(
            "jobs", total=len(job_ids), stored=0, failed=0, inflight=len(job_ids)
        )
        while True:
            for job_id in job_ids:
                if job_id not in records or not records[job_id].is_terminal:
                    records[job_id] = producer.status(job_id)
            done = [r for r in records.values() if r.is_terminal]
            stored = sum(r.state is JobState.STORED for r in done)
            progress.update(
                bar,
                completed=len(done),
                stored=stored,
                failed=len(done) - stored,
                inflight=len(job_ids) - len(done),
            )
            if len(done) == len(job_ids) or time.monotonic() > deadline:
                return records
            time.sleep(0.5)


def _summary(records: dict[str, JobRecord]) -> None:
    table = Table(title="batch summary")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    counts: dict[str, int] = {}
    for record in records.values():
        label = record.state.value
        if record.error and record.state is JobState.FAILED:
            label = f"failed: {record.error.code}"
        counts[label] = counts.get(label, 0) + 1
    for label, count in sorted(counts.items()):
        table.add_row(label, str(count))
    console.print(table)
