"""Failed-login throttling for the JSON API and the dashboard.

Both the login form and `Authorization: Bearer ACCESS_KEY:SECRET_KEY` compare a secret sent in
the clear, so each wrong guess is an oracle. Failures are counted in sliding windows of
WINDOW_S seconds, per (client address, access key id) — MAX_FAILURES_PER_KEY — and per client
address over all key ids — MAX_FAILURES_PER_ADDRESS, against spraying many ids. Past either
limit, every further attempt that the limit covers (right or wrong secret) answers 429
TooManyRequestsException with Retry-After until the oldest failure leaves the window; success
does not reset the count, so a locked-out guesser learns nothing. Other keys from the same
address keep working until the address limit. Memory is bounded: at most MAX_CLIENTS entries
per window, the least recently failing dropped first. SigV4 requests are not throttled here:
a signature reveals nothing about the secret.

The client address is the socket's peer: `serve` believes X-Forwarded-For only from the
proxies its operator trusts (`--forwarded-allow-ips`, `[server] trusted_proxies`), since a
client that could name its own address would get a fresh window with every attempt.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

#: Failed attempts within WINDOW_S seconds: for one access key id from one address, and from
#: one address over all key ids.
MAX_FAILURES_PER_KEY = 10
MAX_FAILURES_PER_ADDRESS = 100
WINDOW_S = 60.0
#: Entries (addresses, or address + key id pairs) tracked at most per limiter.
MAX_CLIENTS = 10_000


class FailureLimiter:
    """Sliding window of failure times per client address."""

    def __init__(
        self,
        max_failures: int,
        window_s: float = WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max, self._window_s, self._max_clients, self._clock = max_failures, window_s, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after_s(self, client: str) -> int:
        """0 when `client` may try; else whole seconds until it may."""
        times = self._recent(client)
        if len(times) < self._max:
            return 0
        return max(1, math.ceil(times[0] + self._window_s - self._clock()))

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        while len(times) > self._max:  # only the last MAX_FAILURES matter for the decision
            times.popleft()
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client, deque())
        horizon = self._clock() - self._window_s
        while times and times[0] <= horizon:
            times.popleft()
        return times


class LoginThrottle:
    """Both limits: per (address, access key id) and per address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_key = FailureLimiter(MAX_FAILURES_PER_KEY, clock=clock)
        self.per_address = FailureLimiter(MAX_FAILURES_PER_ADDRESS, clock=clock)

    def retry_after_s(self, address: str, access_key: str) -> int:
        """0 when this attempt may go ahead; else whole seconds to wait."""
        pair = f"{address} {access_key}"
        return max(self.per_key.retry_after_s(pair), self.per_address.retry_after_s(address))

    def failed(self, address: str, access_key: str) -> None:
        self.per_key.failed(f"{address} {access_key}")
        self.per_address.failed(address)
