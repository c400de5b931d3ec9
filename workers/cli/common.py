"""Shared CLI helpers: errors as one clear line (or JSON with ``--json``), JSON output."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from workers.settings import ConfigError
from workers.urls import masked_url
from workers.visible import visible

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
    from workers.settings import get_settings

    text = str(exc).lower()
    if "refused" in text:
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


def emit_error(message: str, *, code: str, exit_code: int, as_json: bool) -> NoReturn:
    """Print one error (red line on stderr, or ``{"error": {...}}`` on stdout) and exit."""
    if as_json:
        print_json({"error": {"code": code, "message": message}})
    else:
        err_console.print(
            Text.assemble(("error: ", "red"), shown(message)), highlight=False, soft_wrap=True
        )
    raise typer.Exit(exit_code)


def fail_on_config_error(func: Callable[P, R]) -> Callable[P, R]:
    """Configuration and connection errors as one clear line (exit 2 and 3); JSON when
    the command was given ``--json``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if as_json:
                emit_error(str(exc), code="configuration_error", exit_code=2, as_json=True)
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
                raise
            emit_error(
                describe_connection_error(problem),
                code="connection_error",
                exit_code=3,
                as_json=as_json,
            )

    return wrapper


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
