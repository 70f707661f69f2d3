-- The queue: each job's priority as a column beside the spec document that
-- also holds it (admission and positions read it with the unfinished jobs),
-- when each job last held a slot (building and checking) and for how long
-- (the recent run times a pending job's start is estimated from), and the
-- admins' hold on the queue, which survives restarts. Retention: when what
-- was kept of a finished job was removed (its record and events kept), so
-- the sweep does not pick it again.
-- Jobs from before have priority 0 and no run time.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN run_ended_at TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN run_seconds DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN purged_at TIMESTAMPTZ;
CREATE INDEX jobs_by_completed ON jobs (completed_at) WHERE completed_at IS NOT NULL AND purged_at IS NULL;
CREATE INDEX jobs_by_run_ended ON jobs (run_ended_at) WHERE run_ended_at IS NOT NULL;

-- One row at most: the queue is held while it exists.
CREATE TABLE queue_hold (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    held_by  TEXT    NOT NULL,
    held_at  TIMESTAMPTZ NOT NULL
);
