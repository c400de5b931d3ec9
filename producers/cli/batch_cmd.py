"""``nbq batch FILE.jsonl``: enqueue many, watch them with a live progress bar."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nanobanana_queue.producers.batch import (
    BadLine,
    Enqueued,
    add_batch_members,
    check_batch_id,
    derived_batch_id,
    enqueue_line,
    parse_jsonl,
)
from nanobanana_queue.producers.errors import InvalidRequestError, ProducerError
from nanobanana_queue.workers.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    console,
    emit_error,
    err_console,
    fail_on_config_error,
    positive_seconds,
    print_json,
    shown,
)
from nanobanana_queue.workers.cli.common import line as text_line
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, scoped_job_id
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)


@fail_on_config_error
def batch(
    file: Annotated[Path, typer.Argument(help="JSONL: one request object per line ('-' = stdin).")],
    batch_id: Annotated[
        str | None,
        typer.Option(
            "--batch-id",
            help="The batch's id; job ids are BATCH-LINE. Default: derived from the "
            "file's content, so running the same file again sends nothing twice.",
        ),
    ] = None,
    producer_name: Annotated[
        str | None,
        typer.Option("--producer", help="Your producer name: the ids are scoped to it."),
    ] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Follow the jobs until they end.")] = False,
    timeout: Annotated[
        float, typer.Option(callback=positive_seconds, help="Seconds to wait with --wait.")
    ] = 3600.0,
    results: Annotated[Path | None, typer.Option(help="Write results as JSONL here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Job records as JSONL on stdout (summary on stderr).")
    ] = False,
) -> None:
    """Enqueue one job per line (ids BATCH-LINE); bad lines are reported and skipped.

    Running the same file again (or with the same --batch-id after fixing bad lines)
    enqueues only the lines not enqueued yet. Prints the batch id and each line's job id;
    the records go to --results FILE, or to stdout with --json. Exit 1 if a line was
    skipped (or, with --wait, a job did not end stored).
    """
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.producers.cli.consumers import warn_if_unconsumed

    content, text = _read(file, as_json=as_json)
    if results is not None and not os.access(results.parent, os.W_OK):
        # Refused before anything is enqueued (a re-run would be safe, but say it first).
        emit_error(
            f"cannot write --results {results}: its directory is missing or not writable",
            code="file_error",
            exit_code=EXIT_USAGE,
            as_json=as_json,
        )
    try:
        chosen = check_batch_id(batch_id) if batch_id is not None else derived_batch_id(content)
        listed_as = scoped_job_id(producer_name, chosen)
    except (InvalidRequestError, InvalidJobIdError) as exc:
        emit_error(str(exc), code="invalid_request", exit_code=EXIT_USAGE, as_json=as_json)
    screen = err_console if as_json else console  # stdout stays machine-readable
    producer = Producer()
    done: list[Enqueued] = []
    try:
        bad = _enqueue_all(producer, text, chosen, producer_name, done)
    except KeyboardInterrupt:
        _interrupted(listed_as, done, as_json=as_json)
    finally:
        add_batch_members(producer, listed_as, [e.job_id for e in done])
    job_ids = [e.job_id for e in done]
    _print_enqueued(listed_as, done, bad, screen, as_json=as_json)
    if any(e.new for e in done):
        warn_if_unconsumed(producer)
    try:
        records = {job_id: producer.status(job_id) for job_id in job_ids}
        if wait_ and job_ids:
            records = _follow(producer, job_ids, timeout, screen)
    except KeyboardInterrupt:
        _interrupted(listed_as, done, as_json=as_json)
    _summary(records, screen)
    _write_records(records, results, screen, listed_as, as_json=as_json)
    if bad:
        err_console.print(
            text_line(
                f"{bad} line(s) skipped: fix them and run the same command with --batch-id "
                f"{chosen} to enqueue only those"
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED)
    if wait_ and any(r.state is not JobState.STORED for r in records.values()):
        raise typer.Exit(EXIT_FAILED)


def _read(file: Path, *, as_json: bool) -> tuple[bytes, str]:
    """The file's bytes (the derived batch id hashes them) and its text."""
    content = sys.stdin.read().encode() if str(file) == "-" else file.read_bytes()
    try:
        return content, content.decode("utf-8")
    except UnicodeDecodeError as exc:
        emit_error(
            f"{file} is not UTF-8 text (byte {exc.start})",
            code="file_error",
            exit_code=EXIT_USAGE,
            as_json=as_json,
        )


def _enqueue_all(
    producer: Producer,
    text: str,
    batch_id: str,
    producer_name: str | None,
    done: list[Enqueued],
) -> int:
    """Enqueue every good line into ``done``; report the others; how many were bad."""
    bad = 0
    for item in parse_jsonl(text.splitlines()):
        if isinstance(item, BadLine):
            bad += 1
            err_console.print(
                text_line((f"line {item.line_no}: ", "yellow"), str(item.error)), soft_wrap=True
            )
            continue
        try:
            done.append(
                enqueue_line(producer, item, batch_id=batch_id, producer_name=producer_name)
            )
        except ProducerError as exc:
            bad += 1
            err_console.print(
                text_line((f"line {item.line_no}: ", "yellow"), str(exc)), soft_wrap=True
            )
    return bad


def _write_records(
    records: dict[str, JobRecord],
    results: Path | None,
    screen: Console,
    batch_id: str,
    *,
    as_json: bool,
) -> None:
    lines = [json.dumps(r.public_view(), sort_keys=True) for r in records.values()]
    if results:
        with results.open("w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
    if as_json:
        for line in lines:
            typer.echo(line)
    elif not results and lines:
        screen.print(
            text_line(
                ("follow: nbq jobs --batch ", "dim"),
                shown(batch_id, "dim"),
                (" · records: --results FILE or --json", "dim"),
            )
        )


def _print_enqueued(
    batch_id: str, done: list[Enqueued], bad: int, screen: Console, *, as_json: bool
) -> None:
    """The batch id, the counts, and (without --json) each line's job id."""
    new = sum(e.new for e in done)
    screen.print(
        text_line(
            f"batch {batch_id}: {new} new, {len(done) - new} already enqueued (not sent "
            f"again), {bad} bad line(s)"
        ),
        highlight=False,
        soft_wrap=True,
    )
    if as_json or not done:
        return
    table = Table("line", "job_id", "", box=None, pad_edge=False)
    for e in done:
        table.add_row(str(e.line_no), shown(e.job_id), "new" if e.new else "already enqueued")
    screen.print(table)


def _interrupted(batch_id: str, done: list[Enqueued], *, as_json: bool) -> NoReturn:
    """Ctrl-C: say what is already enqueued (it goes on) and how to follow or finish it."""
    job_ids = [e.job_id for e in done]
    message = (
        f"interrupted: batch {batch_id} has {len(job_ids)} job(s) enqueued (they go on); "
        f"follow them with `nbq jobs --batch {batch_id}`; run the same command again to "
        "enqueue the rest (nothing is sent twice)"
    )
    if as_json:
        print_json(
            {
                "error": {"code": "interrupted", "message": message},
                "batch_id": batch_id,
                "job_ids": job_ids,
            }
        )
    else:
        err_console.print(text_line(message), highlight=False, soft_wrap=True)
        for job_id in job_ids:
            err_console.print(shown(job_id), highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_INTERRUPTED)


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
