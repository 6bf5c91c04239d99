-- Two replica indexes that hold only the rows their readers look for. Expiry and the live-lease
-- count look for leased replicas (the statements name the state as a literal, so the planner
-- can use the partial index); a blob's uses look for one result hash, never for NULL. Before, a
-- lease added an entry to both and a result moved its entry in both (state and hash changed);
-- now a lease adds one entry, and a result drops it and adds one. A replay of the lease
-- insert and result update on SQLite (Python's sqlite3, 8,000 tasks, batches of 64, three
-- runs): 24.8-27.5 us a replica before, 22.4-25.0 after; `gleaner bench coordinator` with 256
-- workers: 21.6-23.7k round trips/s before, 24.4-25.5k after.
-- Keep in step with ../sqlite/0011_replica_indexes.sql.
DROP INDEX replicas_state_expiry;
CREATE INDEX replicas_leased_expiry ON replicas (expires_at) WHERE state = 'leased';
DROP INDEX replicas_result_hash;
CREATE INDEX replicas_result_hash ON replicas (result_hash) WHERE result_hash IS NOT NULL;
