-- Each state column accepts only the states the code knows (JobState in gleaner_protocol::api,
-- TaskState and ReplicaState in coordinator/src/db/codec.rs). Keep in step with
-- ../sqlite/0003_state_checks.sql.
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('registered', 'posted', 'settled', 'cancelled', 'expired', 'root_mismatch'));
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('open', 'accepted', 'failed'));
ALTER TABLE replicas ADD CONSTRAINT replicas_state_check
    CHECK (state IN ('leased', 'submitted', 'expired', 'released'));
