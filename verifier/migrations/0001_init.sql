-- The verifier's own state. Portable SQL: runs on SQLite and PostgreSQL through sqlx's Any driver.

-- Each worker's confidence P_i in basis points.
CREATE TABLE reputation (
    worker TEXT PRIMARY KEY,
    bps BIGINT NOT NULL
);

-- Final decisions (accept or fail) per task, as TaskRecord JSON, kept until the job is settled.
-- A row here means the reputation changes of that decision were applied (same transaction).
CREATE TABLE decisions (
    job_id TEXT NOT NULL,
    task_index BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, task_index)
);

-- The settlement report of a job, fixed before the first transaction is sent, so a restart
-- settles and slashes under exactly the same report hash.
CREATE TABLE settlements (
    job_id TEXT PRIMARY KEY,
    report TEXT NOT NULL,
    settle_tx TEXT,
    notified BIGINT NOT NULL DEFAULT 0
);
