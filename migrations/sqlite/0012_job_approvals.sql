-- Every decision people took on a job, as it was accepted: who, when, what
-- and about which snapshot, in the order they came (position = the index in
-- the job's spec `approvals`, which only grows). Written in the same
-- transaction as the spec that took the decision; the spec is what the
-- planner reads, this the record of it.
CREATE TABLE job_approvals (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    approved   INTEGER NOT NULL,  -- 1: approved, 0: rejected
    decided_by TEXT,
    comment    TEXT    NOT NULL,
    snapshot   TEXT,
    decided_at TEXT    NOT NULL,
    UNIQUE (job_id, position)
);
