"""What ``nbq dev`` prints: the services with their URLs and the export lines."""

from __future__ import annotations

import io

from rich.console import Console

from nanobanana_queue.devstack.stack import DevStack, Service
from nanobanana_queue.workers.logs import get_logger

log = get_logger(__name__)


class _EventLines(io.StringIO):
    """A file for rich's Console whose every line becomes one ``dev_output`` log event."""

    def __init__(self) -> None:
        super().__init__()
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                log.info("dev_output", text=line.rstrip())
        return len(text)


def event_console() -> Console:
    """What ``nbq dev`` prints, as log events instead (NBQ_LOG_JSON: one JSON object per
    line, like every process of the stack): the same text, without colours."""
    return Console(file=_EventLines(), color_system=None, force_terminal=False, width=100)


def print_service(console: Console, service: Service) -> None:
    note = f"  [dim]({service.note})[/dim]" if service.note else ""
    console.print(
        f"[green]✓[/green] {service.name:<8} {service.url}{note}", soft_wrap=True, highlight=False
    )


def print_summary(console: Console, stack: DevStack, *, exits_after_demo: bool = False) -> None:
    """The URLs, then the exports a second shell needs to use the same stack."""
    console.print()
    console.rule("[bold]nbq dev is up")
    for service in stack.services:
        if service.name != "worker":
            console.print(
                f"  {service.name + ':':<10} {service.url}", soft_wrap=True, highlight=False
            )
    console.print(f"  {'logs:':<10} {stack.dir} (removed on exit)", soft_wrap=True, highlight=False)
    if stack.s3_is_ephemeral:
        keep = (
            "With --exit-after-demo they are gone when the demo ends; to keep them, run "
            "nbq dev --demo and copy them out before stopping: nbq get JOB_ID -o DIR"
            if exits_after_demo
            else "Copy them out first: nbq get JOB_ID -o DIR"
        )
        console.print(
            "  [yellow]S3 is moto, in memory: stored images (the demo's too) vanish when "
            f"nbq dev stops.[/yellow] {keep}",
            soft_wrap=True,
            highlight=False,
        )
    console.print()
    console.print("[bold]In another shell:[/bold]")
    for line in stack.env.export_lines():
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print()
