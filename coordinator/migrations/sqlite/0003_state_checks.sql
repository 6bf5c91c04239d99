-- Each state column accepts only the states the code knows (JobState in gleaner_protocol::api,
-- TaskState and ReplicaState in coordinator/src/db/codec.rs). SQLite cannot add a CHECK to a
-- table, so the three tables are rebuilt: create new ones (children referencing the new
-- parents), copy, drop the old ones children first, rename (SQLite rewrites the children's
-- REFERENCES on rename), recreate the indexes. Keep in step with ../postgres/0003_state_checks.sql.
CREATE TABLE jobs_new (
    job_id TEXT PRIMARY KEY NOT NULL,
    manifest TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    requester TEXT NOT NULL,
    redundancy BIGINT NOT NULL,
    task_count BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    state TEXT NOT NULL CONSTRAINT jobs_state_check
        CHECK (state IN ('registered', 'posted', 'settled', 'cancelled', 'expired', 'root_mismatch')),
    tasks_root TEXT NOT NULL,
    post_tx TEXT,
    report_hash TEXT,
    created_at BIGINT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'embed'
);
CREATE TABLE tasks_new (
    job_id TEXT NOT NULL REFERENCES jobs_new (job_id),
    idx BIGINT NOT NULL,
    task_hash TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    cost TEXT NOT NULL,
    replicas_needed BIGINT NOT NULL,
    state TEXT NOT NULL CONSTRAINT tasks_state_check
        CHECK (state IN ('open', 'accepted', 'failed')),
    accepted_result TEXT,
    quorum TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE replicas_new (
    lease_id TEXT PRIMARY KEY NOT NULL,
    job_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    worker TEXT NOT NULL,
    state TEXT NOT NULL CONSTRAINT replicas_state_check
        CHECK (state IN ('leased', 'submitted', 'expired', 'released')),
    leased_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    result_hash TEXT,
    signature TEXT,
    submitted_at BIGINT,
    FOREIGN KEY (job_id, idx) REFERENCES tasks_new (job_id, idx)
);

INSERT INTO jobs_new (job_id, manifest, spec_hash, requester, redundancy, task_count, deadline,
                      state, tasks_root, post_tx, report_hash, created_at, kind)
    SELECT job_id, manifest, spec_hash, requester, redundancy, task_count, deadline,
           state, tasks_root, post_tx, report_hash, created_at, kind FROM jobs;
INSERT INTO tasks_new (job_id, idx, task_hash, input_hash, cost, replicas_needed, state,
                       accepted_result, quorum)
    SELECT job_id, idx, task_hash, input_hash, cost, replicas_needed, state,
           accepted_result, quorum FROM tasks;
INSERT INTO replicas_new (lease_id, job_id, idx, worker, state, leased_at, expires_at,
                          result_hash, signature, submitted_at)
    SELECT lease_id, job_id, idx, worker, state, leased_at, expires_at,
           result_hash, signature, submitted_at FROM replicas;

DROP TABLE replicas;
DROP TABLE tasks;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE tasks_new RENAME TO tasks;
ALTER TABLE replicas_new RENAME TO replicas;

CREATE INDEX jobs_state ON jobs (state, deadline);
CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX replicas_task ON replicas (job_id, idx, state);
CREATE INDEX replicas_worker ON replicas (worker, state);
CREATE UNIQUE INDEX replicas_distinct_workers ON replicas (job_id, idx, worker)
    WHERE state IN ('leased', 'submitted');
