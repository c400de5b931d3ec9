"""``nbq dev``: the whole system on one machine, from one command.

Redis (configured, or a private redis-server), S3 (moto), the Evolink emulator (unless a
real API is configured), one worker for every queue and Flower, each a supervised child
process stopped cleanly on Ctrl-C or SIGTERM.
"""

from producers.devstack.demo import DEMO_PROMPTS, run_demo
from producers.devstack.errors import ChildExitedError, DevStackError, StartupError
from producers.devstack.stack import DevStack, Service

__all__ = [
    "DEMO_PROMPTS",
    "ChildExitedError",
    "DevStack",
    "DevStackError",
    "Service",
    "StartupError",
    "run_demo",
]
