"""Shared CLI helpers: errors as one clear line (or JSON with ``--json``), JSON output.

Exit statuses every command keeps (README, "Exit statuses"): 0 done; 1 the job (or the
action) did not succeed; 2 what was given cannot be used (an option, a file, the
configuration); 3 the broker or Redis cannot be reached (refused, timed out, not Redis);
4 ``nbq submit --job-id`` of an id another request holds; 130 interrupted (Ctrl-C), after
printing what was already enqueued.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from nanobanana_queue.workers.settings import ConfigError
from nanobanana_queue.workers.urls import masked_url
from nanobanana_queue.workers.visible import visible

#: The documented exit statuses (see the module docstring).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def shown(value: object, style: str = "") -> Text:
    """A data value for a table cell or a message: control characters escaped
    (:func:`workers.visible.visible`) and rich markup in it never interpreted. Every value
    a sender or producer controls goes through here before rich sees it."""
    return Text(visible(value), style=style)


def line(*parts: str | tuple[str, str] | Text) -> Text:
    """A line of our words and data: ``("error: ", "red")`` tuples are styled text of ours,
    plain strings and Text are data (escaped as :func:`shown` does). No markup parsing."""
    return Text.assemble(
        *(part if isinstance(part, tuple | Text) else shown(part) for part in parts)
    )


def _connection_errors() -> tuple[type[BaseException], ...]:
    import redis
    from kombu.exceptions import OperationalError

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        # Something answered, but not Redis (an HTTP server on the port, say).
        redis.exceptions.InvalidResponse,
        OperationalError,
        ConnectionError,
    )


def connection_problem(exc: BaseException) -> BaseException | None:
    """The connection error behind ``exc`` (itself or a cause), if there is one."""
    errors = _connection_errors()
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, errors):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe_connection_error(exc: BaseException) -> str:
    """``cannot reach Redis at redis://host:port/0: connection refused`` (no password)."""
    import redis

    from nanobanana_queue.workers.settings import get_settings

    text = str(exc).lower()
    if isinstance(exc, redis.exceptions.InvalidResponse) or "protocol error" in text:
        why = "the server there does not speak the Redis protocol (wrong port?)"
    elif "refused" in text:
        why = "connection refused"
    elif "timed out" in text or "timeout" in text or "Timeout" in type(exc).__name__:
        why = "timed out"
    else:
        why = f"connection failed ({type(exc).__name__}: {str(exc)[:120]})"
    try:
        settings = get_settings()
        urls = dict.fromkeys(
            [masked_url(settings.broker_url), masked_url(settings.job_store_url)]
        )  # one entry when the store shares the broker
        where = " / ".join(urls)
    except ConfigError:
        where = "the broker"
    return f"cannot reach the broker/Redis at {where}: {why}"


def logged_as_json(message: str, *, code: str) -> bool:
    """Under the production log setting (NBQ_LOG_JSON), an error that stops a command is
    one JSON log event on stderr like every other line of the process (a worker or the
    ingress stopped by its configuration, before its logging was set up). Returns whether
    it was logged so."""
    from nanobanana_queue.workers.logs import error_event_if_json

    return error_event_if_json(code, message)


def emit_error(message: str, *, code: str, exit_code: int, as_json: bool) -> NoReturn:
    """Print one error (red line on stderr, or ``{"error": {...}}`` on stdout) and exit."""
    if as_json:
        print_json({"error": {"code": code, "message": message}})
    elif logged_as_json(message, code=code):
        pass
    else:
        err_console.print(
            Text.assemble(("error: ", "red"), shown(message)), highlight=False, soft_wrap=True
        )
    raise typer.Exit(exit_code)


def file_error(exc: OSError, *, as_json: bool) -> NoReturn:
    """A file or directory that cannot be read or written: ``cannot open /x: No such file``."""
    what = exc.strerror or type(exc).__name__
    emit_error(
        f"cannot use {exc.filename}: {what}",
        code="file_error",
        exit_code=EXIT_USAGE,
        as_json=as_json,
    )


def fail_on_config_error(func: Callable[P, R]) -> Callable[P, R]:
    """Configuration, file and connection errors as one clear line (exit 2, 2 and 3);
    JSON when the command was given ``--json``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if as_json:
                emit_error(str(exc), code="configuration_error", exit_code=2, as_json=True)
            if not logged_as_json(str(exc), code="configuration_error"):
                # Escaped: "[worker]" in a message is text, not markup.
                err_console.print(
                    Text.assemble(("configuration error: ", "red"), shown(exc)), soft_wrap=True
                )
            raise typer.Exit(2) from None
        except typer.Exit:
            raise
        except Exception as exc:
            problem = connection_problem(exc)
            if problem is None:
                if isinstance(exc, OSError) and exc.filename is not None:
                    file_error(exc, as_json=as_json)
                raise
            emit_error(
                describe_connection_error(problem),
                code="connection_error",
                exit_code=EXIT_UNREACHABLE,
                as_json=as_json,
            )

    return wrapper


def positive_seconds(value: float) -> float:
    """An option callback: a wait of zero or fewer seconds is refused before anything runs."""
    if value <= 0:
        raise typer.BadParameter(f"must be more than 0 seconds, not {value:g}")
    return value


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
