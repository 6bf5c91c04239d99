-- Each task counts its live replicas (leased or submitted) in `live`, kept by a trigger on
-- `replicas` whatever statement changes a state, so that leasing reads one column instead of
-- counting replicas for every open task (the lease query was O(open tasks) per lease).
-- A lease past its expiry counts until it is flipped to 'expired', which every lease does
-- first, in its own transaction. Keep in step with ../sqlite/0006_task_live.sql.
ALTER TABLE tasks ADD COLUMN live BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET live = (
    SELECT COUNT(*) FROM replicas r
    WHERE r.job_id = tasks.job_id AND r.idx = tasks.idx AND r.state IN ('leased', 'submitted')
);
CREATE FUNCTION replicas_count_live() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state IN ('leased', 'submitted') THEN
            UPDATE tasks SET live = live + 1 WHERE job_id = NEW.job_id AND idx = NEW.idx;
        END IF;
    ELSIF (OLD.state IN ('leased', 'submitted')) <> (NEW.state IN ('leased', 'submitted')) THEN
        UPDATE tasks
        SET live = live + (CASE WHEN NEW.state IN ('leased', 'submitted') THEN 1 ELSE -1 END)
        WHERE job_id = NEW.job_id AND idx = NEW.idx;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER replicas_live AFTER INSERT OR UPDATE OF state ON replicas
FOR EACH ROW EXECUTE FUNCTION replicas_count_live();
CREATE INDEX tasks_open ON tasks (job_id, idx) WHERE state = 'open';
-- Expiry flips leased replicas past their time on every lease, and the share counts live
-- leases: both find them through this index instead of scanning every replica.
CREATE INDEX replicas_state_expiry ON replicas (state, expires_at);
