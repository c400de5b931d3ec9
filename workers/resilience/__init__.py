"""Shared-by-all-workers protections in Redis: the quota breaker and the rate limiter."""
