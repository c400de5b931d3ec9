"""The consumer-level guard: no broker message can kill or stall a worker."""
