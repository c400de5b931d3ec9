"""HTTP ingress: other services enqueue and follow jobs over HTTP (``nbq serve``).

It is a thin layer over :class:`producers.Producer`; it also receives Evolink callbacks
(``POST /v1/callbacks/evolink/{job_id}``), which only ever trigger an immediate poll.
"""

from nanobanana_queue.producers.ingress.app import create_app

__all__ = ["create_app"]
