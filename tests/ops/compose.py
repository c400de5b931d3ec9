"""Reading docker-compose.yml and .env.example for the ops tests (no Docker engine)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from nanobanana_queue.workers.settings import ENV_PREFIX, SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROJECT_IMAGE = "${APP_IMAGE:-nanobanana-queue:local}"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``; ``$${...}`` is an escaped dollar.
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"(API_KEY|SECRET_KEY|SECRET|PASSWORD|TOKENS?|BASIC_AUTH)$")
PLACEHOLDER = re.compile(r"change-?me", re.IGNORECASE)


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def project_services() -> dict[str, dict[str, Any]]:
    """Services that run the project image (their command is an ``nbq`` sub-command)."""
    return {name: s for name, s in services().items() if s.get("image") == PROJECT_IMAGE}


def var_refs(text: str) -> list[tuple[str, str, str]]:
    """``(name, operator, default)`` of every interpolation in ``text``."""
    return [(m.group(1), m.group(2) or "", m.group(3) or "") for m in VAR_REF.finditer(text)]


def env_example() -> dict[str, str]:
    """The uncommented ``NAME=value`` lines of .env.example."""
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def env_example_mentions() -> set[str]:
    """Every variable named in .env.example, commented examples included."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def is_settings_variable(name: str) -> bool:
    """``NBQ_<FIELD>`` for a Settings field, or ``NBQ_<SECRET>_FILE``."""
    if not name.startswith(ENV_PREFIX):
        return False
    field = name[len(ENV_PREFIX) :].lower()
    if field in Settings.model_fields:
        return True
    return field.endswith("_file") and field[: -len("_file")] in SECRET_FIELDS


def is_secret_name(name: str) -> bool:
    """Names whose value is a credential (user names and access-key ids are not)."""
    return bool(SECRET_NAME.search(name.upper()))


def env_example_commented(profile: str | None = None) -> dict[str, str]:
    """The commented ``# NAME=value`` examples of .env.example (alternative setups); with
    ``profile``, only those of the ``# --- ... (profile "<profile>" ...) ---`` section."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    if profile is not None:
        sections = re.split(r"^# ---", text, flags=re.MULTILINE)
        text = next(s for s in sections if f'profile "{profile}"' in s.splitlines()[0])
    return dict(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=(\S*)\s*$", text, flags=re.MULTILINE))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"{name} is required: {arg}")
            return current
        return current or ""

    return VAR_REF.sub(one, value).replace("$$", "$")


def resolved_environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """The container environment compose would give ``service`` with ``env`` as .env.

    A key without a value is passed through only when ``env`` sets it.
    """
    out: dict[str, str] = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            if key in env:
                out[key] = env[key]
        else:
            out[key] = interpolate(str(value), env)
    return out
