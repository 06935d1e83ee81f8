"""Which hosts stay on this machine (domain/hosts.py)."""

from __future__ import annotations

import pytest

from s3batch.domain.hosts import is_loopback_host


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.5.6.7", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "example.com", "localhost.example.com", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback_host(host)
