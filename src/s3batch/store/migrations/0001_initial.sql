-- Jobs, their manifest chunks, and the results of tasks in chunks not yet finished.
--
-- Durability model: the manifest is cut into chunks at Preparing (byte offset + task count).
-- A finished task's report row goes to task_results at once (batched); when every task of a
-- chunk is in, the rows are compacted into chunks.results (zlib CSV) and deleted, in one
-- transaction. After a crash, a chunk re-runs only the tasks missing from task_results, so
-- no finished task is redone and every task lands in the report exactly once.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    client_request_token TEXT,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    runtime TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    total_tasks INTEGER,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    elapsed_active_s REAL NOT NULL DEFAULT 0,
    active_since REAL,
    creation_time REAL NOT NULL,
    termination_date REAL,
    suspended_date REAL,
    suspended_cause TEXT,
    status_update_reason TEXT,
    failure_reasons TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    report_manifest TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE (account_id, client_request_token)
);
CREATE INDEX jobs_by_status ON jobs (status, priority DESC, creation_time);
CREATE INDEX jobs_by_account ON jobs (account_id, creation_time DESC);

CREATE TABLE chunks (
    job_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    n_tasks INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    results BLOB,
    PRIMARY KEY (job_id, chunk_no)
) WITHOUT ROWID;

CREATE TABLE task_results (
    job_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    row TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk_no, idx)
) WITHOUT ROWID;
