"""Commands for producers: submit, status, wait, get, cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nanobanana_queue.producers.errors import JobIdConflictError, ProducerError
from nanobanana_queue.workers.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    connection_problem,
    console,
    describe_connection_error,
    emit_error,
    err_console,
    fail_on_config_error,
    line,
    positive_seconds,
    print_json,
    shown,
)
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.visible import visible

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer


#: Characters of a prompt ``nbq status`` shows (prompts may have 2000).
PROMPT_SHOWN = 300

#: ``nbq submit --job-id X`` with a request other than X's: its own exit status, so a
#: script tells "your id is taken" from a failed job (1), a bad request (2) or no
#: connection (3).
JOB_ID_CONFLICT_EXIT = 4


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("wait")(wait)
    app.command("get")(get)
    app.command("cancel")(cancel)


def _producer() -> Producer:
    from nanobanana_queue.producers.api import Producer

    return Producer()


def _fail(exc: Exception, code: int = 1, *, as_json: bool = False) -> typer.Exit:
    """Print ``exc`` (JSON with --json) and exit; typed so callers may ``raise`` it."""
    problem = connection_problem(exc)
    if problem is not None:  # e.g. an enqueue interrupted by a refused connection
        emit_error(
            f"{describe_connection_error(problem)}; {exc}",
            code="connection_error",
            exit_code=3,
            as_json=as_json,
        )
    emit_error(str(exc), code=_error_code(exc), exit_code=code, as_json=as_json)


def _error_code(exc: Exception) -> str:
    """``JobNotFoundError`` → ``job_not_found`` (the JSON error's ``code``)."""
    name = type(exc).__name__.removesuffix("Error")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _live(as_json: bool) -> bool:
    """The live status line only on a terminal and never with --json."""
    return not as_json and console.is_terminal


def _add_request_rows(table: Table, record: JobRecord) -> None:
    """What was asked and when: the prompt (cut), size and quality, the creation time."""
    request = record.request or {}
    if request.get("prompt"):
        prompt = str(request["prompt"])
        cut = prompt if len(prompt) <= PROMPT_SHOWN else prompt[:PROMPT_SHOWN] + "…"
        table.add_row("[bold]prompt[/bold]", shown(cut))
    if request:
        shape = f"{request.get('size', 'auto')} · {request.get('quality', '')}"
        table.add_row("[bold]size[/bold]", shown(shape))
    if record.created_at:
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.created_at))
        table.add_row("[bold]created[/bold]", created)


#: Row labels that say what a field counts (a 402-refused create is an API call, not a
#: create anyone paid for: paid_creates counts those).
_LABELS = {"attempts": "create calls (API)", "credits_reserved": "credits reserved (held)"}


def show_record(record: JobRecord, *, as_json: bool) -> None:
    if as_json:
        print_json(record.public_view())
        return
    table = Table(show_header=False, box=None)
    view = record.public_view()
    table.add_row("[bold]job_id[/bold]", shown(record.job_id))
    table.add_row("[bold]state[/bold]", shown(record.state.value))
    _add_request_rows(table, record)
    for name in (
        "progress",
        "producer",
        "batch_id",
        "evolink_task_id",
        "attempts",
        "paid_creates",
        "polls",
        "credits_reserved",
        "credits_paid",
        "waiting_reason",
        "callback_task_id",
    ):
        if view.get(name) not in (None, "", 0):
            table.add_row(f"[bold]{_LABELS.get(name, name)}[/bold]", shown(view[name]))
    if record.outcome_deadline_at and record.state.value == "outcome_unknown":
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.outcome_deadline_at))
        table.add_row("[bold]waiting until[/bold]", f"[yellow]{until}[/yellow]")
    if record.error:
        table.add_row(
            "[bold]error[/bold]",
            line(shown(record.error.code, "red"), f": {record.error.message}"),
        )
    for obj in record.objects:
        table.add_row(
            "[bold]object[/bold]", shown(f"{obj.key} ({obj.size} B, sha256 {obj.sha256[:12]}…)")
        )
    console.print(table)


@fail_on_config_error
def submit(
    prompt: Annotated[str, typer.Argument(help="What to draw (at most 2000 characters).")],
    size: Annotated[str, typer.Option(help="Aspect ratio: auto, 1:1, 16:9, ...")] = "auto",
    quality: Annotated[
        str, typer.Option(help="1K, 2K or 4K (any case).", callback=lambda v: v.upper())
    ] = "2K",
    image_url: Annotated[list[str] | None, typer.Option(help="Reference image (repeat).")] = None,
    thinking_level: Annotated[str | None, typer.Option(help="auto, min or high.")] = None,
    job_id: Annotated[str | None, typer.Option(help="Your id; also an idempotency key.")] = None,
    producer_name: Annotated[
        str | None,
        typer.Option("--producer", help="Your producer name: --job-id is scoped to it."),
    ] = None,
    priority: Annotated[
        str,
        typer.Option(
            help="high, normal or low: order among your producer's own jobs (never before "
            "another producer's share).",
        ),
    ] = "normal",
    notify_url: Annotated[
        str | None,
        typer.Option("--notify-url", help="https URL told when the job ends (signed webhook)."),
    ] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    timeout: Annotated[
        float, typer.Option(callback=positive_seconds, help="Seconds to wait with --wait.")
    ] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Enqueue one generation; prints the job id (or the final record with --wait)."""
    request: dict[str, object] = {"prompt": prompt, "size": size, "quality": quality}
    if image_url:
        request["image_urls"] = image_url
    if thinking_level:
        request["model_params"] = {"thinking_level": thinking_level}
    from nanobanana_queue.producers.cli.consumers import warn_if_unconsumed
    from nanobanana_queue.producers.cli.live import wait_for_job

    producer = _reachable_producer(as_json=as_json)
    try:
        handle = producer.enqueue(
            request,
            job_id=job_id,
            producer=producer_name,
            notify_url=notify_url,
            priority=priority,
        )
        warn_if_unconsumed(producer)
        if not wait_:
            if as_json:
                print_json({"job_id": handle.job_id, "state": handle.status().state.value})
            else:
                typer.echo(visible(handle.job_id))
            return
        if not as_json:
            err_console.print(line("job ", handle.job_id), highlight=False)
        try:
            record = wait_for_job(
                producer, handle.job_id, timeout_s=timeout, console=console, live=_live(as_json)
            )
        except KeyboardInterrupt:
            _interrupted(producer, handle.job_id, as_json=as_json)
    except JobIdConflictError as exc:
        raise _fail(exc, JOB_ID_CONFLICT_EXIT, as_json=as_json) from None
    except ProducerError as exc:
        raise _fail(exc, 2 if isinstance(exc, ValueError) else 1, as_json=as_json) from None
    show_record(record, as_json=as_json)
    if record.state.value != "stored":
        raise typer.Exit(1)


@fail_on_config_error
def status(
    job_id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job's record: state, progress, errors, stored objects."""
    try:
        record = _producer().status(job_id)
    except ProducerError as exc:
        raise _fail(exc, as_json=as_json) from None
    show_record(record, as_json=as_json)


@fail_on_config_error
def wait(
    job_id: Annotated[str, typer.Argument()],
    timeout: Annotated[
        float, typer.Option(callback=positive_seconds, help="Give up after this many seconds.")
    ] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Wait until the job is stored, failed or cancelled; exit 1 unless stored."""
    from nanobanana_queue.producers.cli.live import wait_for_job

    producer = _producer()
    try:
        record = wait_for_job(
            producer, job_id, timeout_s=timeout, console=console, live=_live(as_json)
        )
    except KeyboardInterrupt:
        _interrupted(producer, job_id, as_json=as_json)
    except ProducerError as exc:
        raise _fail(exc, as_json=as_json) from None
    show_record(record, as_json=as_json)
    if record.state.value != "stored":
        raise typer.Exit(1)


@fail_on_config_error
def get(
    job_id: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write to.")] = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Download a stored job's images (and manifest) from S3 into a directory."""
    from nanobanana_queue.workers.storage.manifest import manifest_key

    producer = _producer()
    try:
        record = producer.status(job_id)
    except ProducerError as exc:
        raise _fail(exc, as_json=as_json) from None
    if record.state.value != "stored":
        emit_error(
            f"job {job_id} is {record.state.value}, not stored",
            code="job_not_stored",
            exit_code=1,
            as_json=as_json,
        )
    target = output / job_id
    target.mkdir(parents=True, exist_ok=True)  # an unusable directory: one line, exit 2
    objects = producer.runtime.objects()
    written: list[str] = []
    for obj in record.objects:
        path = target / obj.key.rsplit("/", 1)[-1]
        objects.get_object_to(obj.key, path)
        written.append(str(path))
    manifest = target / "manifest.json"
    objects.get_object_to(manifest_key(producer.settings.s3_prefix, job_id), manifest)
    written.append(str(manifest))
    if as_json:
        print_json({"job_id": job_id, "files": written})
        return
    for path_text in written:
        typer.echo(visible(path_text))


@fail_on_config_error
def cancel(
    job_id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cancel a queued or in-flight job (a stored job cannot be cancelled)."""
    try:
        record = _producer().cancel(job_id)
    except ProducerError as exc:
        raise _fail(exc, as_json=as_json) from None
    if as_json:
        print_json(record.public_view())
        return
    typer.echo(visible(f"{record.job_id} {record.state.value}"))


def _reachable_producer(*, as_json: bool) -> Producer:
    """A producer whose Redis answered a PING: a connection refused before the enqueue is
    known to have enqueued nothing (an enqueue cut half way may or may not have, and says
    so)."""
    try:
        producer = _producer()
        producer.runtime.redis.ping()
        return producer
    except Exception as exc:
        problem = connection_problem(exc)
        if problem is None:
            raise
        emit_error(
            f"{describe_connection_error(problem)}; nothing was enqueued",
            code="connection_error",
            exit_code=EXIT_UNREACHABLE,
            as_json=as_json,
        )


def _interrupted(producer: Producer, job_id: str, *, as_json: bool) -> None:
    """Ctrl-C while waiting: the job goes on; say which it is and how to follow it."""
    try:
        state = producer.status(job_id).state.value
    except Exception:  # interrupted: say what is known, whatever Redis does now
        state = "enqueued"
    message = (
        f"interrupted: job {job_id} is {state} and goes on; follow it with "
        f"`nbq wait {job_id}` or stop it with `nbq cancel {job_id}`"
    )
    emit_error(message, code="interrupted", exit_code=EXIT_INTERRUPTED, as_json=as_json)
