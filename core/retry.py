"""Bounded exponential backoff, shared by every writer."""
from __future__ import annotations

import random
from typing import Iterator


def backoff_delays(max_retries: int, base_s: float, cap_s: float = 30.0) -> Iterator[float]:
    """Delays before each retry: base, 2*base, 4*base, ... capped, with +-20 % jitter so writers don't sync up."""
    for attempt in range(max_retries):
        yield min(cap_s, base_s * 2 ** attempt) * random.uniform(0.8, 1.2)
