"""Neither producer nor worker: the parts that run the whole system on one machine.

- ``nbq dev`` (``cli``, ``stack``): Redis (configured, or a private redis-server), S3
  (moto), the Evolink emulator (unless a real API is configured), one worker for every
  queue and Flower, each a supervised child process stopped cleanly on Ctrl-C or SIGTERM.
- ``procs``: the one process supervisor, shared with the tests (``tests/support``) and
  the benchmarks (``benchmarks/harness.py``).

Nothing is imported here: ``nbq`` lists ``dev`` without loading the stack.
"""
