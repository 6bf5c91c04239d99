-- The task kind of each job (the manifest's "kind"), so that a worker is leased only the kinds
-- it runs (its signed capabilities list them). Jobs registered before this migration are embed.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'embed';
