"""Waiting for a job in a terminal: a live status line (state, progress, polls, elapsed).

Only on a tty and without ``--json``; otherwise the wait is silent and the caller prints
the final record, so scripts get nothing but machine-readable output.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from nanobanana_queue.producers.errors import WaitTimeoutError
from nanobanana_queue.workers.cli.common import shown
from nanobanana_queue.workers.jobs.record import JobRecord

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer

#: Seconds between two reads of the job record while the status line is shown.
REFRESH_S = 0.25


def status_line(record: JobRecord, elapsed_s: float) -> Text:
    """``job 1f3c… · generating · 45% · polls 3 · 12.4s`` (plus why a queued job waits)."""
    parts: list[Text] = [shown(f"job {record.job_id}"), shown(record.state.value, "bold")]
    parts.append(shown(f"{int(record.progress or 0)}%"))
    parts.append(shown(f"polls {record.polls}"))
    if record.paid_creates > 1:
        # Paid creates, not API calls: a create refused with 402 (or 429, 5xx) made no
        # task and cost nothing, so a quota wait does not count up here.
        parts.append(shown(f"paid creates {record.paid_creates}"))
    parts.append(shown(f"{elapsed_s:.1f}s"))
    if record.waiting_reason:
        parts.append(shown(record.waiting_reason, "yellow"))
    return Text(" · ").join(parts)


def wait_for_job(
    producer: Producer, job_id: str, *, timeout_s: float, console: Console, live: bool
) -> JobRecord:
    """Block until the job ends; with ``live`` redraw the status line as it moves."""
    if not live:
        return producer.wait(job_id, timeout_s=timeout_s)
    started = time.monotonic()
    record = producer.status(job_id)
    with console.status(status_line(record, 0.0)) as line:
        while not record.is_terminal:
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                raise WaitTimeoutError(
                    f"job {job_id} still {record.state.value} after {timeout_s}s"
                )
            time.sleep(REFRESH_S)
            record = producer.status(job_id)
            line.update(status_line(record, time.monotonic() - started))
    return record
