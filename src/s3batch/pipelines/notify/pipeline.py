"""A pipeline's notifications: a notice per finished file, and one per batch of files.

A batch is what one `Pipeline.drain(end_batch=True)` finished: a poll or backlog pass (the
whole pass, not its listing pages), a replay, or the files a webhook burst brought. A batch
with no finished file sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3batch.pipelines.notify.base import NotifyEvent, NotifyTarget
from s3batch.pipelines.notify.dispatch import Notifier, Recorder
from s3batch.pipelines.notify.messages import BatchTally, FileOutcome, batch_notice, file_notice


class PipelineNotifications:
    def __init__(self, pipeline: str, run_id: str, targets: Sequence[NotifyTarget], record: Recorder) -> None:
        self.pipeline = pipeline
        self.run_id = run_id
        self.notifier = Notifier.for_targets(targets, record)
        self.tally = BatchTally()

    def file_finished(self, outcome: FileOutcome) -> None:
        self.tally.add(outcome)
        event = NotifyEvent.SUCCESS if outcome.succeeded else NotifyEvent.FAILURE
        if self.notifier.wants(event):
            self.notifier.publish(file_notice(self.pipeline, self.run_id, outcome))

    def end_batch(self) -> None:
        tally, self.tally = self.tally, BatchTally()
        if tally.files and self.notifier.wants(NotifyEvent.BATCH):
            self.notifier.publish(batch_notice(self.pipeline, self.run_id, tally))

    async def close(self) -> None:
        """Send what is left of the batch, then wait (bounded) for deliveries to finish."""
        self.end_batch()
        await self.notifier.close()
