"""Failed-login throttling: sliding windows per (address, key) and per address, bounded."""

from __future__ import annotations

from s3batch.api.ratelimit import (
    MAX_FAILURES_PER_ADDRESS,
    MAX_FAILURES_PER_KEY,
    WINDOW_S,
    FailureLimiter,
    LoginThrottle,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_locks_after_the_limit_and_reopens_when_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(3, window_s=60.0, clock=clock)
    for step in range(3):
        assert limiter.retry_after_s("a") == 0
        limiter.failed("a")
        clock.now += 10 if step < 2 else 0
    assert limiter.retry_after_s("a") == 40  # the first failure (t=1000) leaves at t=1060
    assert limiter.retry_after_s("b") == 0
    clock.now += 39.5
    assert limiter.retry_after_s("a") == 1
    clock.now += 0.5
    assert limiter.retry_after_s("a") == 0


def test_memory_is_bounded() -> None:
    limiter = FailureLimiter(1, window_s=60.0, max_clients=2, clock=Clock())
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert limiter.retry_after_s("a") == 0  # dropped, least recently failing
    assert limiter.retry_after_s("b") > 0 and limiter.retry_after_s("c") > 0


def test_throttle_is_per_key_then_per_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(MAX_FAILURES_PER_KEY):
        throttle.failed("10.0.0.1", "AKIDA")
    assert throttle.retry_after_s("10.0.0.1", "AKIDA") > 0
    assert throttle.retry_after_s("10.0.0.1", "AKIDB") == 0
    assert throttle.retry_after_s("10.0.0.2", "AKIDA") == 0
    for n in range(MAX_FAILURES_PER_ADDRESS - MAX_FAILURES_PER_KEY):
        throttle.failed("10.0.0.1", f"AKID{n}")
    assert throttle.retry_after_s("10.0.0.1", "AKIDB") > 0  # spraying key ids locks the address
    clock.now += WINDOW_S
    assert throttle.retry_after_s("10.0.0.1", "AKIDA") == 0
