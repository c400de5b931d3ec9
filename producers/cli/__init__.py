"""The ``nbq`` command line (typer + rich). It only parses and calls library code."""
