-- Each job counts the replicas its open tasks still want (Σ max(replicas_needed − live, 0)) in
-- `job_wanted.wanted`, kept by a trigger on `tasks` whatever statement changes a task, so that a lease
-- reads one row per job instead of summing over every open task (that sum made each lease
-- O(open tasks)). Keep in step with ../sqlite/0007_job_wanted.sql.
-- A table of its own, not a column of `jobs` (whose row carries the manifest), as in SQLite.
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
CREATE FUNCTION jobs_add_wanted_row() RETURNS trigger AS $$
BEGIN
    INSERT INTO job_wanted (job_id, wanted) VALUES (NEW.job_id, 0);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_wanted_row AFTER INSERT ON jobs
FOR EACH ROW EXECUTE FUNCTION jobs_add_wanted_row();
CREATE FUNCTION task_wanted(state TEXT, needed BIGINT, live BIGINT) RETURNS BIGINT AS $$
    SELECT CASE WHEN state = 'open' AND needed > live THEN needed - live ELSE 0 END
$$ LANGUAGE sql IMMUTABLE;
CREATE FUNCTION tasks_count_wanted() RETURNS trigger AS $$
DECLARE
    delta BIGINT := 0;
    job TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        delta := task_wanted(NEW.state, NEW.replicas_needed, NEW.live);
        job := NEW.job_id;
    ELSIF TG_OP = 'UPDATE' THEN
        delta := task_wanted(NEW.state, NEW.replicas_needed, NEW.live)
               - task_wanted(OLD.state, OLD.replicas_needed, OLD.live);
        job := NEW.job_id;
    ELSE
        delta := -task_wanted(OLD.state, OLD.replicas_needed, OLD.live);
        job := OLD.job_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE job_wanted SET wanted = wanted + delta WHERE job_id = job;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER tasks_wanted AFTER INSERT OR UPDATE OF state, live, replicas_needed OR DELETE
ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_count_wanted();
