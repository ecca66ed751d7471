"""Waiting between reconnect attempts: the event receiver's to the broker, the event log's to MongoDB."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with full jitter (the AWS architecture blog's variant)."""

    def __init__(self, base: float = 0.5, cap: float = 15.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; grows with each call until ``reset``."""
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``base``: the last attempt succeeded."""
        self.attempt = 0
