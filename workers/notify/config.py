"""Who may ask for a webhook, signed with which secret, sent where by default.

``NBQ_NOTIFY_SECRETS="shop:whsec_…,batch-jobs:whsec_…"`` (or ``NBQ_NOTIFY_SECRETS_FILE``)
gives each producer its Standard Webhooks secret; an entry with an empty producer name
(``:whsec_…``) signs jobs without a producer. ``NBQ_NOTIFY_URLS="shop:https://…"`` gives
a producer a default ``notify_url`` for every job that names none. A job whose producer
has no secret cannot ask for a webhook: refused at enqueue, never sent unsigned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.notify.urls import NotifyUrlPolicy, check_notify_url, notify_policy
from nanobanana_queue.workers.settings import Settings


class NotifyRefusedError(ValueError):
    """A notify URL this job may not have (no secret for its producer, or an unsafe URL)."""


def _pairs(raw: str, what: str) -> dict[str, str]:
    """``name:value,name2:value2`` (the value may hold colons: split at the first)."""
    out: dict[str, str] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, value = entry.partition(":")
        if not sep or not value.strip():
            raise ValueError(f"{what}: each entry is producer:value (got {name.strip()!r}:…)")
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class NotifyConfig:
    """The parsed notify settings; ``""`` stands for "no producer"."""

    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    default_urls: dict[str, str] = field(default_factory=dict)
    policy: NotifyUrlPolicy = field(default_factory=lambda: NotifyUrlPolicy(allowed_hosts=()))
    #: Producers opted in to ``job.progress`` (NBQ_NOTIFY_PROGRESS; ``"*"``: every one).
    progress_producers: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyConfig:
        raw = settings.notify_secrets.get_secret_value() if settings.notify_secrets else ""
        secrets = _pairs(raw, "NBQ_NOTIFY_SECRETS")
        for name, secret in secrets.items():
            if not secret.startswith("whsec_"):
                raise ValueError(
                    f"NBQ_NOTIFY_SECRETS: the secret of {name or '(no producer)'!r} must start "
                    "with whsec_ (a Standard Webhooks secret: whsec_ + base64)"
                )
        config = cls(
            secrets,
            _pairs(settings.notify_urls, "NBQ_NOTIFY_URLS"),
            notify_policy(settings),
            frozenset(settings.notify_progress),
        )
        for producer, url in config.default_urls.items():
            config.check(producer or None, url)
        return config

    def secret_for(self, producer: str | None) -> str | None:
        return self.secrets.get(producer or "")

    def url_for(self, producer: str | None, own: str | None) -> str | None:
        """The job's own notify_url, else its producer's default (None: no webhook)."""
        return own or self.default_urls.get(producer or "")

    def wants_progress(self, producer: str | None) -> bool:
        """Whether this producer's jobs send ``job.progress`` (besides their end)."""
        return "*" in self.progress_producers or (producer or "") in self.progress_producers

    def check(self, producer: str | None, url: str) -> str:
        """Refuse a notify URL at enqueue: a producer without a secret, or an unsafe URL."""
        if self.secret_for(producer) is None:
            who = f"producer {producer!r}" if producer else "a job without a producer"
            entry = f"{producer}:whsec_…" if producer else ":whsec_…"
            raise NotifyRefusedError(
                f"notify_url refused: {who} has no webhook secret "
                f"(add {entry} to NBQ_NOTIFY_SECRETS); nothing was enqueued"
            )
        try:
            check_notify_url(url, self.policy)
        except UnsafeUrlError as exc:
            raise NotifyRefusedError(str(exc)) from None
        return url


def own_callback_refusal(settings: Settings, request: object) -> str | None:
    """Why a request's own Evolink ``callback_url`` cannot be honoured, or None.

    With the project's callbacks on (NBQ_PUBLIC_CALLBACK_URL) the create carries the
    project's per-job callback instead, so a producer's ``callback_url`` would be dropped:
    refused at enqueue instead, pointing at ``notify_url`` (signed, retried, the job's
    public view rather than the vendor's raw task).
    """
    own = request.get("callback_url") if isinstance(request, dict) else None
    if own is None and not isinstance(request, dict):
        own = getattr(request, "callback_url", None)
    if not own or not settings.public_callback_url:
        return None
    return (
        "callback_url cannot be used while this deployment receives the API's callbacks "
        "itself (NBQ_PUBLIC_CALLBACK_URL is set): use notify_url to be told when the job "
        "ends (a signed webhook); nothing was enqueued"
    )
