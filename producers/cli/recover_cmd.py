"""``nbq retry`` and ``nbq adopt``: a person decides what happens to a failed job.

A job that failed ``outcome_unknown`` may already have a paid task that nobody recorded.
``nbq adopt JOB TASK_ID`` attaches that task (found in the vendor's dashboard) and
resumes polling: nothing paid again. ``nbq retry JOB`` sends a new create instead; for
such a job it may pay twice, so it asks for ``--yes``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from nanobanana_queue.producers.errors import JobNotFoundError, MayPayTwiceError, ProducerError
from nanobanana_queue.workers.cli.common import (
    err_console,
    fail_on_config_error,
    line,
    print_json,
    shown,
)
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.visible import visible

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.workers.jobs.record import JobRecord


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)
    app.command("adopt")(adopt)


def _producer() -> Producer:
    from nanobanana_queue.producers.api import Producer  # lazy: keeps `nbq --help` fast

    return Producer()


@fail_on_config_error
def retry(
    job_id: Annotated[str, typer.Argument(help="A failed or outcome_unknown job.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Re-send even if the last create may have been paid, or the job failed "
            "for a permanent reason (retryable: false).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-send a failed job's create (asks for --yes when it may pay twice or for nothing)."""
    try:
        record = _producer().retry(job_id, accept_may_pay_twice=yes)
    except MayPayTwiceError as exc:
        err_console.print(line(("warning: ", "yellow"), str(exc)))
        raise typer.Exit(1) from None
    except ProducerError as exc:
        err_console.print(line(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    if as_json:
        print_json(record.public_view())
        return
    typer.echo(visible(f"{record.job_id} {record.state.value}: a new create is on its way"))


@fail_on_config_error
def adopt(
    job_id: Annotated[str, typer.Argument(help="A failed or outcome_unknown job.")],
    task_id: Annotated[str, typer.Argument(help="The Evolink task id to attach.")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="If the task had failed (retryable), re-create it: a new paid create.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Do not ask when the task's time does not match the job."),
    ] = False,
    wait_s: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for a worker to take it (0: don't).")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Attach a task you found (e.g. in the vendor's dashboard) and resume polling.

    Shows the job's prompt and the task's creation time first, and asks when they do not
    match (the task was created long after the job's last create). A task that had
    failed ends the job failed with its reason; --yes re-creates it instead (may pay).
    """
    producer = _producer()
    try:
        current = producer.status(job_id)
    except ProducerError as exc:
        err_console.print(line(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    if not _task_matches(producer, current, task_id, force=force):
        raise typer.Exit(1)
    try:
        before = producer.adopt(job_id, task_id, accept_may_pay_twice=yes)
    except ProducerError as exc:
        err_console.print(line(("error: ", "red"), str(exc)))
        raise typer.Exit(1) from None
    record = before
    refused = f"adopt of task {task_id} refused"
    verdict = None  # the worker's, as soon as the record has it
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            record = producer.status(job_id)
        except JobNotFoundError:
            break
        if record.state is not before.state or record.evolink_task_id == task_id:
            break
        if record.updated_at > before.updated_at and (record.waiting_reason or "").startswith(
            refused
        ):
            verdict = record.waiting_reason
            break
        time.sleep(0.2)
    if as_json:
        print_json(record.public_view())
        if verdict:
            raise typer.Exit(1)
        return
    _say_outcome(job_id, task_id, record, verdict, wait_s=wait_s)


def _say_outcome(
    job_id: str, task_id: str, record: JobRecord, verdict: str | None, *, wait_s: float
) -> None:
    """What became of the adoption, in one line (exit 1 unless the task was taken)."""
    if verdict:
        err_console.print(line(f"{job_id} still {record.state.value}: {verdict}"), soft_wrap=True)
        raise typer.Exit(1)
    if record.evolink_task_id == task_id and record.state is not JobState.FAILED:
        typer.echo(visible(f"{job_id} {record.state.value}: task {task_id} adopted"))
    elif record.evolink_task_id == task_id:
        code = record.error.code if record.error else "unknown_error"
        err_console.print(
            line(
                shown(f"{job_id} failed", "yellow"),
                f": task {task_id} had failed ({code}); it was not re-created (a new paid "
                f"create). `nbq adopt {job_id} {task_id} --yes` or `nbq retry {job_id}` to "
                "send one",
            )
        )
        raise typer.Exit(1)
    elif wait_s > 0:
        err_console.print(
            line(
                shown(f"{job_id} still {record.state.value}", "yellow"),
                ": the task was not adopted (unknown to the API, not this job's, or no worker "
                f"on the poll queue); see the worker log (adoption_refused) and "
                f"`nbq status {job_id}`",
            )
        )
        raise typer.Exit(1)
    else:
        typer.echo(visible(f"{job_id}: adoption of {task_id} requested"))


#: A task its create made appears within seconds of that create; later is suspicious.
MATCH_WINDOW_S = 300.0


def _utc(epoch_s: float | None) -> str:
    if not epoch_s:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def _task_matches(producer: Producer, record: JobRecord, task_id: str, *, force: bool) -> bool:
    """Show what the person is about to join; ask when the times do not match."""
    from nanobanana_queue.workers.stages.adopt import earliest_task_time

    prompt = str(record.request.get("prompt") or "")
    first = record.first_create_at or record.created_at
    last = record.state_times.get(JobState.SUBMITTING.value) or first
    err_console.print(
        line(
            f"job  {record.job_id}: prompt {prompt[:80]!r}; first create sent {_utc(first)}, "
            f"last {_utc(last)}"
        )
    )
    task = producer.task_facts(task_id)
    if task is None:
        err_console.print(
            line(
                f"task {task_id}: not looked up here (no API key, or the API did not answer); "
                "the worker checks it before adopting"
            )
        )
        return True
    task_prompt = getattr(task, "prompt", None)
    err_console.print(
        line(
            f"task {task_id}: created {_utc(task.created)}, status {task.status.value}"
            + (
                f", prompt {str(task_prompt)[:80]!r}"
                if task_prompt
                else " (the API does not show its prompt)"
            )
        )
    )
    if task.created is not None and task.created < earliest_task_time(record):
        from nanobanana_queue.workers import metrics

        metrics.ownership_refused("person", "task_before_job")
        err_console.print(
            line(
                ("error: ", "red"),
                "the task was created before this job's first create was sent: it cannot be "
                "this job's (the worker would refuse it)",
            )
        )
        return False
    late = task.created is not None and task.created > last + MATCH_WINDOW_S
    differs = bool(task_prompt) and str(task_prompt) != prompt
    if (late or differs) and not force:
        why = "its prompt differs" if differs else "it was created long after the job's last create"
        return typer.confirm(f"This task may not be this job's ({why}). Attach it anyway?")
    return True
