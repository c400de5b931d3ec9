"""The worker side of ``nbq``: ``worker``, ``flower``, ``metrics``, ``reconcile``, and the
CLI helpers every ``nbq`` command shares (``common``). ``producers/cli/main.py`` assembles
the app; each part registers its own commands on it."""

from nanobanana_queue.workers.cli.commands import register

__all__ = ["register"]
