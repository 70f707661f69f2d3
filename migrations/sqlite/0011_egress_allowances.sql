-- Destinations a person allowed agents beyond their configured lists, as
-- the original service's "user-approved domains": for one job's agents of a
-- role, or (job_id NULL) for every job's. Read at most once a second per agent, so
-- an allowance counts from its next connection a second later, on every replica, without restart.
CREATE TABLE egress_allowances (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT REFERENCES jobs (job_id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    -- An allow-list rule: name, *.name, optional :port.
    rule       TEXT NOT NULL,
    allowed_by TEXT NOT NULL,
    allowed_at TEXT NOT NULL
);
CREATE INDEX egress_allowances_by_job ON egress_allowances (job_id);
