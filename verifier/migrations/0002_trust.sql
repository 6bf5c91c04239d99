-- Each worker's trust streak: results checked against another replica and agreed since its last
-- contradiction (gleaner_protocol::replication). A worker absent here has a streak of 0.
CREATE TABLE trust (
    worker TEXT PRIMARY KEY,
    streak BIGINT NOT NULL
);
