"""Guards for untrusted input: URLs from producers, the API and callbacks."""
