"""Retry policy for retryable task failures: exponential backoff with full jitter.

AWS redrives TemporaryFailure tasks "before the job completes" without documenting how many
times; s3batch makes at most `max_attempts` attempts per task (default 4: the first try plus 3
redrives), sleeping `min(cap, base * 2**n) * random()` between them. Throttling (SlowDown, 429,
503) also feeds the engine's adaptive concurrency limit, so a throttled endpoint sees fewer
requests rather than the same number retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Attempts per task, the first included.
DEFAULT_MAX_ATTEMPTS = 4
#: First backoff step and the largest single sleep, in seconds.
DEFAULT_BASE_DELAY_S = 0.2
DEFAULT_MAX_DELAY_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Sleep before attempt number `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        draw: float = (rng or random).random()
        return ceiling * draw

    def should_retry(self, attempt: int) -> bool:
        return attempt < self.max_attempts
