-- Blob reads are allowed by the jobs that name the blob (see `Store::blob_uses`): index every
-- column that names one, so each read is a handful of index lookups.
CREATE INDEX tasks_input_hash ON tasks (input_hash);
CREATE INDEX tasks_accepted_result ON tasks (accepted_result);
CREATE INDEX replicas_result_hash ON replicas (result_hash);
CREATE INDEX jobs_report_hash ON jobs (report_hash);
