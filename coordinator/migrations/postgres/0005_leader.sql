-- Several coordinators may share one database: one of them at a time follows the chain and
-- posts roots (Store::try_lead). The row names the holder and when its lease ends.
CREATE TABLE leader (
    role TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
