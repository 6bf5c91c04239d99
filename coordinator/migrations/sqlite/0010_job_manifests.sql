-- Each job's manifest in a table of its own. SQLite stores a row's values in column order and
-- spills a large one into a chain of overflow pages, which must be walked to reach any value
-- after it: with the manifest (about 93 bytes a task) second in `jobs`, every read of a job's
-- state, kind or deadline walked the whole chain. On a connection whose page cache another
-- connection's commit had just emptied (every read while the coordinator writes), reading the
-- state of an 8,000-task job took 0.4-1 ms, 0.02 ms without the manifest in the row, and it
-- grew with the job. Keep in step with ../postgres/0010_job_manifests.sql.
CREATE TABLE job_manifests (
    job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs (job_id),
    manifest TEXT NOT NULL
);
INSERT INTO job_manifests (job_id, manifest) SELECT job_id, manifest FROM jobs;
ALTER TABLE jobs DROP COLUMN manifest;
