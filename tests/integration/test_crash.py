"""`kill -9` of the background worker, again and again, at every phase of a job: after each
restart the job goes on, and in the end it is Complete, its report lists every task exactly
once, and the objects are in the right state (crash part). The same for a pipeline:
`s3batch pipeline run --backlog` killed and restarted until every file is archived or in the
error bucket exactly once.

The CI variant of bench/crash_campaign.py (the 50,000-task, 20-kill campaign): the campaign
logic lives there, these tests pick sizes that keep the file well under 90 s on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from crash_campaign import (
    PIPELINE,
    Campaign,
    CampaignConfig,
    CampaignResult,
    LocalObjects,
    PipelineCampaign,
    S3Objects,
    summary_table,
)

pytestmark = pytest.mark.integration

#: Kills per job. The first is aimed at Preparing, the last at Completing (the report write),
#: the rest at random progress points while Active.
KILLS = 5
#: Kills that must land for a run to count: enough to cross restarts mid-job.
MIN_KILLS_LANDED = 2
#: Upper bound per job, kills and restarts included, in seconds.
JOB_TIMEOUT_S = 60.0
SEED = 6
#: Pipeline files: at ~200 files/s the run lasts a few seconds, enough for the kills to land.
PIPELINE_FILES = 400
#: Every this-many-th file fails (error bucket); each first failure pauses the pipeline 0.5 s.
PIPELINE_FAIL_EVERY = 50


def check(result: CampaignResult, phases: set[str]) -> None:
    print(summary_table([result]))  # shown by pytest when the test fails
    assert result.problems == []
    assert result.status == "Complete"
    # The job must really have been killed mid-way (else the durability checks prove nothing).
    # How many of the KILLS land depends on machine load: a loaded CI box restarts workers
    # slowly while a fast job (file deletes run at ~10,000 tasks/s) races to the end.
    assert len(result.kills) >= MIN_KILLS_LANDED, "the job ended before the kills landed"
    assert phases <= {p for p, n in result.phases.items() if n}, f"kills landed in {dict(result.phases)}"


def test_copy_survives_kills_in_every_phase(tmp_path: Path) -> None:
    root = tmp_path / "buckets"
    config = CampaignConfig("copy", tasks=3000, kills=KILLS, seed=SEED, job_timeout_s=JOB_TIMEOUT_S)
    result = Campaign(config, LocalObjects(root), tmp_path, "local").run()
    check(result, {"Active"})


def test_delete_survives_kills(tmp_path: Path) -> None:
    # Deleting files runs at ~10,000 tasks/s (DeleteObjects batches of 1,000, one batch in
    # flight here): a smaller job ends before the restarts.
    config = CampaignConfig(
        "delete", tasks=40_000, kills=KILLS, seed=SEED, concurrency=1, job_timeout_s=JOB_TIMEOUT_S
    )
    result = Campaign(config, LocalObjects(tmp_path / "buckets"), tmp_path, "local").run()
    # Its Active phase lasts well under a second, so kills may all land in Preparing and
    # Completing; the other cases cover kills while Active.
    check(result, set())


def test_tagging_on_moto_survives_kills_in_every_phase(tmp_path: Path, moto_server: str) -> None:
    config = CampaignConfig("tagging", tasks=500, kills=KILLS, seed=SEED, job_timeout_s=JOB_TIMEOUT_S)
    result = Campaign(config, S3Objects(moto_server), tmp_path, "moto").run()
    check(result, {"Active"})


def test_invoke_reruns_at_most_in_flight_and_unflushed_tasks(tmp_path: Path) -> None:
    # A known handler rate (2 workers / 10 ms) gives a tight bound on re-run invocations.
    config = CampaignConfig(
        "invoke", tasks=600, kills=KILLS, seed=SEED, concurrency=8, function_workers=2,
        handler_delay_s=0.01, job_timeout_s=JOB_TIMEOUT_S,
    )  # fmt: skip
    result = Campaign(config, LocalObjects(tmp_path / "buckets"), tmp_path, "local").run()
    check(result, {"Active"})
    assert result.duplicate_bound is not None and result.duplicates <= result.duplicate_bound


def test_pipeline_survives_kills(tmp_path: Path) -> None:
    config = CampaignConfig(
        PIPELINE, tasks=PIPELINE_FILES, kills=KILLS, seed=SEED, bad_every=PIPELINE_FAIL_EVERY,
        job_timeout_s=JOB_TIMEOUT_S,
    )  # fmt: skip
    campaign = PipelineCampaign(config, LocalObjects(tmp_path / "buckets"), tmp_path)
    result = campaign.run()
    # Kills while Active land after the restarted run finished files of its own and before the
    # last file: really mid-run. Every kill was followed by a restart.
    check(result, {"Active"})
    assert campaign.runs == len(result.kills) + 1
    assert all(0 < k.done < PIPELINE_FILES for k in result.kills if k.status == "Active")
    assert len(campaign.bad) == PIPELINE_FILES // PIPELINE_FAIL_EVERY  # the error path ran too
    assert result.duplicate_bound is not None and result.duplicates <= result.duplicate_bound
