"""A recording channel for unit tests: keeps every notice; can fail its first attempts."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3batch.pipelines.notify.base import DeliveryError, Notice


@dataclass
class MemoryChannel:
    label: str = "memory://"
    #: Attempts to fail before succeeding.
    fail_first: int = 0
    #: Whether those failures are permanent (like HTTP 400) or worth retrying (like 503).
    permanent: bool = False
    attempts: int = 0
    sent: list[Notice] = field(default_factory=list)

    async def send(self, notice: Notice) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise DeliveryError(f"fake failure {self.attempts}", permanent=self.permanent)
        self.sent.append(notice)
