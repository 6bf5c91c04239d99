-- Gleaner coordinator schema (PostgreSQL). U256 as decimal TEXT, hashes and addresses as 0x hex TEXT,
-- times as unix seconds. Keep in step with ../sqlite/0001_init.sql.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY NOT NULL,
    manifest TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    requester TEXT NOT NULL,
    redundancy BIGINT NOT NULL,
    task_count BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    state TEXT NOT NULL,
    tasks_root TEXT NOT NULL,
    post_tx TEXT,
    report_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state, deadline);

CREATE TABLE tasks (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    idx BIGINT NOT NULL,
    task_hash TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    cost TEXT NOT NULL,
    replicas_needed BIGINT NOT NULL,
    state TEXT NOT NULL,
    accepted_result TEXT,
    quorum TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX tasks_state ON tasks (state);

CREATE TABLE replicas (
    lease_id TEXT PRIMARY KEY NOT NULL,
    job_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    worker TEXT NOT NULL,
    state TEXT NOT NULL,
    leased_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    result_hash TEXT,
    signature TEXT,
    submitted_at BIGINT,
    FOREIGN KEY (job_id, idx) REFERENCES tasks (job_id, idx)
);
CREATE INDEX replicas_task ON replicas (job_id, idx, state);
CREATE INDEX replicas_worker ON replicas (worker, state);
CREATE UNIQUE INDEX replicas_distinct_workers ON replicas (job_id, idx, worker)
    WHERE state IN ('leased', 'submitted');

CREATE TABLE blobs (
    hash TEXT PRIMARY KEY NOT NULL,
    size BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);

CREATE TABLE workers (
    address TEXT PRIMARY KEY NOT NULL,
    capabilities TEXT NOT NULL,
    gflops DOUBLE PRECISION NOT NULL,
    last_nonce BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE sessions (
    token TEXT PRIMARY KEY NOT NULL,
    address TEXT NOT NULL,
    role TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE chain_blocks (
    number BIGINT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE chain_events (
    block_hash TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    event TEXT NOT NULL,
    job_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (block_hash, tx_hash, log_index)
);
CREATE INDEX chain_events_number ON chain_events (block_number);
