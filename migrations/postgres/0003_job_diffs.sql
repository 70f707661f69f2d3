-- The builder's change against the job's base, captured when checking ends,
-- for the reviewer (GET /jobs/{id}/diff).
CREATE TABLE job_diffs (
    job_id      TEXT        PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
    base_commit TEXT,
    diff        TEXT        NOT NULL,
    truncated   BOOLEAN     NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
