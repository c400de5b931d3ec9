"""``nbq batch FILE.jsonl``: enqueue many, watch them with a live progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers.batch import BadLine, parse_jsonl
from producers.errors import ProducerError
from workers.cli.common import console, err_console, fail_on_config_error, shown
from workers.cli.common import line as text_line
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Job records as JSONL on stdout (summary on stderr).")
    ] = False,
) -> None:
    """Enqueue one job per line; bad lines are reported with their number and skipped.

    The records go to --results FILE, or to stdout with --json; otherwise only the
    summary table is printed.
    """
    from producers.api import Producer
    from producers.cli.consumers import warn_if_unconsumed

    lines = sys.stdin if str(file) == "-" else file.open(encoding="utf-8")
    producer = Producer()
    job_ids: list[str] = []
    bad = 0
    with lines:
        for item in parse_jsonl(lines):
            if isinstance(item, BadLine):
                bad += 1
                err_console.print(text_line((f"line {item.line_no}: ", "yellow"), str(item.error)))
                continue
            try:
                job_ids.append(producer.enqueue(item.request, job_id=item.job_id).job_id)
            except ProducerError as exc:
                bad += 1
                err_console.print(text_line((f"line {item.line_no}: ", "yellow"), str(exc)))
    screen = err_console if as_json else console  # stdout stays machine-readable
    screen.print(f"enqueued {len(job_ids)} job(s), skipped {bad} bad line(s)")
    if job_ids:
        warn_if_unconsumed(producer)
    records = {job_id: producer.status(job_id) for job_id in job_ids}
    if wait_ and job_ids:
        records = _follow(producer, job_ids, timeout, screen)
    _summary(records, screen)
    lines = [json.dumps(r.public_view(), sort_keys=True) for r in records.values()]
    if results:
        with results.open("w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
    if as_json:
        for line in lines:
            typer.echo(line)
    elif not results and lines:
        screen.print("[dim]job records: --results FILE or --json[/dim]")
    if wait_ and any(r.state is not JobState.STORED for r in records.values()):
        raise typer.Exit(1)


def _follow(
    producer: Producer, job_ids: list[str], timeout_s: float, screen: Console
) -> dict[str, JobRecord]:
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
    with Progress(*columns, console=screen) as progress:
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


def _summary(records: dict[str, JobRecord], screen: Console) -> None:
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
        table.add_row(shown(label), str(count))
    screen.print(table)
