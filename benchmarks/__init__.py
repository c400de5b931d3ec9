"""Performance measurements run by hand (not tests): ``python -m benchmarks.<name>``."""
