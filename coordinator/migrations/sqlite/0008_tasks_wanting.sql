-- The open tasks that still want a replica, in job then index order: the lease's pick walks
-- this index and no longer steps over tasks that are open but fully leased or awaiting their
-- decision (thousands in a large job with a verifier behind, and on PostgreSQL each pick
-- stepped over them under SKIP LOCKED). The pick's WHERE repeats this predicate exactly.
CREATE INDEX tasks_wanting ON tasks (job_id, idx) WHERE state = 'open' AND live < replicas_needed;
