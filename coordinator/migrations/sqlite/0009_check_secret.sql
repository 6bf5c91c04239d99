-- Jobs with spot checks: the secret whose keccak256 the coordinator commits with the task root
-- (postTasksCommitted) and the settlement reveals. Drawn at registration and kept here so that
-- any coordinator on this database, after any restart, commits and serves the same secret.
-- NULL: the job replicates every task (no spot checks).
ALTER TABLE jobs ADD COLUMN check_secret TEXT;
