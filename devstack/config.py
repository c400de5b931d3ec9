"""The ``NBQ_*`` values the dev stack hands its children, and how they are shown.

Every value the stack generates (ports, a dev API key, moto's credentials) is a throwaway
and printed as is. Anything the user configured that is secret (a real API key, real S3
credentials, a Redis password) is only ever printed as a placeholder.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from nanobanana_queue.workers.settings import ENV_PREFIX, Settings, load_settings
from nanobanana_queue.workers.urls import masked_url

#: Pipeline timing matched to the emulator's time scale (a 1K image takes about 1 s).
#: Applied only to variables the user has not set.
DEV_TIMING = {
    "NBQ_POLL_MIN_INTERVAL_S": "0.25",
    "NBQ_POLL_MAX_INTERVAL_S": "1",
    "NBQ_DEFAULT_ESTIMATED_TIME_S": "1.5",
    "NBQ_POLL_DEADLINE_S": "120",
    "NBQ_RETRY_BACKOFF_BASE_S": "0.25",
    "NBQ_RETRY_BACKOFF_MAX_S": "5",
    "NBQ_BREAKER_PROBE_INTERVAL_S": "3",
    "NBQ_STUCK_AFTER_S": "30",
    "NBQ_RECONCILE_INTERVAL_S": "5",
}

KEY_PLACEHOLDER = "<your key>"


def field_name(variable: str) -> str:
    """``NBQ_S3_BUCKET`` → ``s3_bucket`` (the Settings field)."""
    return variable.removeprefix(ENV_PREFIX).lower()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``<password>``, fit to print."""
    return masked_url(url, mask="<password>")


@dataclass
class DevEnv:
    """``values``: set in every child's environment; ``shown``: the export lines' values."""

    user: Settings
    values: dict[str, str] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)

    def set(self, variable: str, value: str) -> None:
        """A generated value: given to children and printed as is."""
        self.values[variable] = value
        self.shown[variable] = shlex.quote(value)

    def set_default(self, variable: str, value: str) -> None:
        """Like :meth:`set`, unless the user configured ``variable`` themselves."""
        if field_name(variable) not in self.user.model_fields_set:
            self.set(variable, value)

    def show(self, variable: str, printed: str) -> None:
        """A user-configured value: children inherit it; print ``printed`` instead."""
        self.shown[variable] = printed

    def settings(self) -> Settings:
        """The settings every child sees: the user's environment plus :attr:`values`."""
        return load_settings(**{field_name(k): v for k, v in self.values.items()})

    def export_lines(self) -> list[str]:
        return [f"export {name}={value}" for name, value in self.shown.items()]
