"""Policy as data: poll schedule and backoff (pure, no I/O); each error class in
``workers/errors.py`` carries its own retry rule."""
