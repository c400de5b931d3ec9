"""``nbq dev --demo``: three prompts through the producer API, followed to the end."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.cli.common import line
from nanobanana_queue.workers.jobs.ids import caller_job_id
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState

#: Seconds the demo waits for its jobs before reporting what it has.
DEMO_TIMEOUT_S = 120.0
#: Seconds between status reads while the progress display runs.
REFRESH_S = 0.2


@dataclass(frozen=True)
class DemoPrompt:
    prompt: str
    size: str
    quality: str = "1K"


DEMO_PROMPTS = (
    DemoPrompt("a lighthouse on a cliff at dawn, watercolour", "1:1"),
    DemoPrompt("a banana-shaped airship over a harbour city, wide shot", "16:9"),
    DemoPrompt("a tall cactus under a starry desert sky, poster", "9:16"),
)


def run_demo(producer: Producer, console: Console, *, timeout_s: float = DEMO_TIMEOUT_S) -> bool:
    """Enqueue :data:`DEMO_PROMPTS`, show progress, print where the images are.

    Returns True when every demo job ended ``stored``.
    """
    jobs = {
        producer.enqueue(
            {"prompt": p.prompt, "size": p.size, "quality": p.quality}, producer="nbq-dev-demo"
        ).job_id: p
        for p in DEMO_PROMPTS
    }
    records = _follow(producer, jobs, console, timeout_s)
    _print_results(producer, jobs, records, console)
    return all(r.state is JobState.STORED for r in records.values())


def _follow(
    producer: Producer, jobs: dict[str, DemoPrompt], console: Console, timeout_s: float
) -> dict[str, JobRecord]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]:<11}"),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + timeout_s
    records: dict[str, JobRecord] = {}
    with Progress(*columns, console=console) as progress:
        rows = {
            job_id: progress.add_task(
                f"{p.size:>5} {caller_job_id(job_id)[:12]}", total=100, state="queued"
            )
            for job_id, p in jobs.items()
        }
        while True:
            for job_id, row in rows.items():
                record = records[job_id] = producer.status(job_id)
                done = 100 if record.is_terminal else record.progress
                progress.update(row, completed=done, state=record.state.value)
            if all(r.is_terminal for r in records.values()) or time.monotonic() > deadline:
                return records
            time.sleep(REFRESH_S)


def _print_results(
    producer: Producer, jobs: dict[str, DemoPrompt], records: dict[str, JobRecord], console: Console
) -> None:
    bucket = producer.settings.s3_bucket
    stored = 0
    for job_id, record in records.items():
        prompt = jobs[job_id]
        if record.state is not JobState.STORED:
            why = f": {record.error.code}: {record.error.message}" if record.error else ""
            console.print(
                line(("✗ ", "red"), f"job {job_id} ({prompt.size}) {record.state.value}{why}"),
                soft_wrap=True,
                highlight=False,
            )
            continue
        stored += 1
        console.print(
            f"[green]✓[/green] job {job_id} ({prompt.size}) stored: {prompt.prompt}",
            soft_wrap=True,
            highlight=False,
        )
        for image in producer.results(job_id):
            console.print(
                f"    s3://{bucket}/{image.key}  ({image.size} bytes, {image.content_type})",
                soft_wrap=True,
                highlight=False,
            )
            console.print(line(f"    {image.url}"), soft_wrap=True, highlight=False)
    console.print(
        f"[bold]{stored}/{len(records)} demo jobs stored[/bold] in bucket {bucket}", highlight=False
    )
