-- Drained orchestrators: while a replica's row exists it admits no new job
-- (the jobs it started go on), across its restarts, until an admin resumes
-- it. Keyed by the replica's name (`orchestrator.replica_name`, by default
-- the host name); who drained it and since when. Resuming deletes the row.
CREATE TABLE replica_drains (
    replica     TEXT PRIMARY KEY,
    drained_by  TEXT NOT NULL,
    drained_at  TIMESTAMPTZ NOT NULL
);
