"""Policy as data: poll schedule, backoff and the error → action table (pure, no I/O)."""
