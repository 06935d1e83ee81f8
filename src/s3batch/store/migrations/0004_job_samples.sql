-- A running job's progress over time (domain/timeline.py): one row every few seconds, so a
-- finished or resumed job still shows its whole history. Counts are cumulative; throttled is
-- the throttling answers since the previous row; in_flight and concurrency_limit are NULL
-- where the engine does not report them.
CREATE TABLE job_samples (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    throttled INTEGER NOT NULL,
    in_flight INTEGER,
    concurrency_limit INTEGER,
    PRIMARY KEY (job_id, at)
) WITHOUT ROWID;
