"""The README's demo command, end to end in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_sentiment_walkthrough(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "s3batch", "demo", "--dir", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for sentiment in ("POSITIVE", "NEGATIVE", "NEUTRAL"):
        assert sentiment in result.stdout
    [manifest] = (out / "buckets" / "demo-reports").rglob("manifest.json")
    doc = json.loads(manifest.read_text())
    assert [r["TaskExecutionStatus"] for r in doc["Results"]] == ["succeeded"]
    # Running it again starts afresh instead of failing on the old folder.
    again = subprocess.run(
        [sys.executable, "-m", "s3batch", "demo", "--dir", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(list((out / "buckets" / "demo-reports").rglob("manifest.json"))) == 1
