-- Each job's manifest in a table of its own, as in SQLite, where a large value in the row made
-- every read of a job's later columns walk it (PostgreSQL keeps large values out of line, so
-- this is for one schema on both). Keep in step with ../sqlite/0010_job_manifests.sql.
CREATE TABLE job_manifests (
    job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs (job_id),
    manifest TEXT NOT NULL
);
INSERT INTO job_manifests (job_id, manifest) SELECT job_id, manifest FROM jobs;
ALTER TABLE jobs DROP COLUMN manifest;
