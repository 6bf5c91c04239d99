-- Each job counts the replicas its open tasks still want (Σ max(replicas_needed − live, 0)) in
-- `job_wanted.wanted`, kept by triggers on `tasks` whatever statement changes a task, so that a lease
-- reads one row per job instead of summing over every open task (that sum made each lease
-- O(open tasks): 20,000 open tasks halved the round trips). Keep in step with
-- ../postgres/0007_job_wanted.sql.
-- A table of its own, not a column of `jobs`: SQLite rewrites a whole row on update, and a
-- job's row carries its manifest (megabytes for a large job), once per replica leased.
CREATE TABLE job_wanted (
    job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs (job_id),
    wanted BIGINT NOT NULL DEFAULT 0
);
INSERT INTO job_wanted (job_id, wanted)
SELECT j.job_id, (
    SELECT COALESCE(SUM(CASE WHEN t.replicas_needed > t.live
                             THEN t.replicas_needed - t.live ELSE 0 END), 0)
    FROM tasks t WHERE t.job_id = j.job_id AND t.state = 'open'
) FROM jobs j;
CREATE TRIGGER jobs_wanted_row AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_wanted (job_id, wanted) VALUES (NEW.job_id, 0);
END;
CREATE TRIGGER tasks_wanted_insert AFTER INSERT ON tasks
WHEN NEW.state = 'open' AND NEW.replicas_needed > NEW.live
BEGIN
    UPDATE job_wanted SET wanted = wanted + (NEW.replicas_needed - NEW.live)
    WHERE job_id = NEW.job_id;
END;
CREATE TRIGGER tasks_wanted_update AFTER UPDATE OF state, live, replicas_needed ON tasks
BEGIN
    UPDATE job_wanted SET wanted = wanted
        + (CASE WHEN NEW.state = 'open' AND NEW.replicas_needed > NEW.live
                THEN NEW.replicas_needed - NEW.live ELSE 0 END)
        - (CASE WHEN OLD.state = 'open' AND OLD.replicas_needed > OLD.live
                THEN OLD.replicas_needed - OLD.live ELSE 0 END)
    WHERE job_id = NEW.job_id
      AND (CASE WHEN NEW.state = 'open' AND NEW.replicas_needed > NEW.live
                THEN NEW.replicas_needed - NEW.live ELSE 0 END)
       <> (CASE WHEN OLD.state = 'open' AND OLD.replicas_needed > OLD.live
                THEN OLD.replicas_needed - OLD.live ELSE 0 END);
END;
CREATE TRIGGER tasks_wanted_delete AFTER DELETE ON tasks
WHEN OLD.state = 'open' AND OLD.replicas_needed > OLD.live
BEGIN
    UPDATE job_wanted SET wanted = wanted - (OLD.replicas_needed - OLD.live)
    WHERE job_id = OLD.job_id;
END;
