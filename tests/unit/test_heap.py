"""heap.freeze_once: only where enabled, once per process. Each case runs in a fresh interpreter,
so that freezing never touches the test process's own collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_library_user_keeps_its_collector_as_it_set_it() -> None:
    out = run(
        """
        import gc
        from s3batch import heap
        print(heap.freeze_once(), gc.get_freeze_count())
        """
    )
    assert out == "False 0"


def test_enabled_it_freezes_the_objects_alive_once() -> None:
    out = run(
        """
        import gc
        from s3batch import heap
        heap.enable()
        first = heap.freeze_once()
        frozen = gc.get_freeze_count()
        later = [object() for _ in range(10)]  # objects made after the freeze stay collectable
        print(first, frozen > 1000, heap.freeze_once(), gc.get_freeze_count() == frozen)
        """
    )
    assert out == "True True False True"


def test_a_job_operation_built_in_an_s3batch_process_freezes_the_heap(tmp_path: Path) -> None:
    out = run(
        f"""
        import gc
        from s3batch import heap
        from s3batch.engines.execute import build_operation
        from s3batch.operations.base import JobContext
        from s3batch.storage.config import LocalConfig
        heap.enable()
        store = LocalConfig(root={str(tmp_path)!r})
        job = JobContext(job_id="j", account_id="1", region="us-east-1", storage=store)
        before = gc.get_freeze_count()
        build_operation(job, {{"S3DeleteObject": {{}}}})
        print(before, gc.get_freeze_count() > 1000)
        """
    )
    assert out == "0 True"
