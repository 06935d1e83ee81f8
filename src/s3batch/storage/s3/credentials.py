"""One set of credentials for both request paths of a shared S3 client (client.py).

botocore's own session resolves the credential chain once, when the client opens; the lean
path signs with those keys, and the aiobotocore client, built later if at all, gets the same
object (`aio_credentials`) instead of resolving the chain a second time (a second STS call, or
MFA prompt, for an assumed role).

Temporary credentials (SSO, an assumed role, an instance's or container's role) refresh near
their expiry, which may call out over the network: `SharedKeys.frozen` runs that in a worker
thread, one refresh at a time, so the event loop never waits on it and waiting requests hold
no thread.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

#: botocore's advisory refresh window (RefreshableCredentials._advisory_refresh_timeout), in
#: seconds: used where the credentials object does not say.
BOTOCORE_ADVISORY_REFRESH_S = 15 * 60
#: How long before botocore's refresh point the keys stop being read on the event loop, in
#: seconds: a read right at that point could start the refresh there (botocore checks the
#: clock again), so the margin covers the gap between the two checks, a thread switch included.
REFRESH_MARGIN_S = 5.0


@dataclass(eq=False)
class SharedKeys:
    """botocore's credentials, as both request paths read them (module docstring)."""

    credentials: Credentials
    #: One refresh at a time: the others wait here, not in a thread each.
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def temporary(self) -> bool:
        return hasattr(self.credentials, "refresh_needed")

    async def frozen(self) -> ReadOnlyCredentials:
        """The keys to sign with now."""
        if self._readable():
            return self.credentials.get_frozen_credentials()
        async with self.refreshing:
            if self._readable():  # refreshed while this one waited
                return self.credentials.get_frozen_credentials()
            return await asyncio.to_thread(self.credentials.get_frozen_credentials)

    def _readable(self) -> bool:
        """Whether reading the keys cannot start a refresh: fixed keys, or temporary ones
        further than REFRESH_MARGIN_S from botocore's refresh point (never fetched yet counts
        as due)."""
        refresh_needed = getattr(self.credentials, "refresh_needed", None)
        if refresh_needed is None:
            return True
        advisory = getattr(self.credentials, "_advisory_refresh_timeout", BOTOCORE_ADVISORY_REFRESH_S)
        return not refresh_needed(advisory + REFRESH_MARGIN_S)


@dataclass(frozen=True)
class GivenCredentials:
    """An aiobotocore credential provider that hands out credentials already resolved (None:
    there are none, and the client's requests fail to sign as they would have)."""

    credentials: Any

    async def load_credentials(self) -> Any:
        return self.credentials


def aio_credentials(keys: SharedKeys) -> Any:
    """aiobotocore's credentials for `keys`: fixed keys as aiobotocore's own AioCredentials;
    temporary ones read through `keys.frozen`, so both request paths share one refresh."""
    from aiobotocore.credentials import AioCredentials

    method = getattr(keys.credentials, "method", None)
    if keys.temporary:
        return _refreshing_type()(keys, method)
    frozen = keys.credentials.get_frozen_credentials()  # fixed keys: nothing to fetch
    return AioCredentials(frozen.access_key, frozen.secret_key, frozen.token, method=method)


@functools.cache
def _refreshing_type() -> type[Any]:
    """The adapter class, made on first use (aiobotocore is imported only then)."""
    from aiobotocore.credentials import AioCredentials

    class SharedRefreshing(AioCredentials):  # type: ignore[misc]
        """Temporary credentials shared with the lean path, read through
        `get_frozen_credentials` only, as aiobotocore reads its own temporary credentials
        (their key attributes raise there too: a key read that way could be stale)."""

        def __init__(self, keys: SharedKeys, method: str | None) -> None:
            # Not Credentials.__init__: it would set the keys, which are never held here.
            self._keys = keys
            self.method = method
            self.account_id = None

        async def get_frozen_credentials(self) -> ReadOnlyCredentials:
            return await self._keys.frozen()

        @property
        def access_key(self) -> str:
            raise NotImplementedError("temporary credentials: use get_frozen_credentials")

        @property
        def secret_key(self) -> str:
            raise NotImplementedError("temporary credentials: use get_frozen_credentials")

        @property
        def token(self) -> str:
            raise NotImplementedError("temporary credentials: use get_frozen_credentials")

    return SharedRefreshing
