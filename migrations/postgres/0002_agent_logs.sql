-- The output of each agent, saved just before its container is removed.
CREATE TABLE agent_logs (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT        NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    role        TEXT        NOT NULL,
    attempt     INTEGER     NOT NULL,
    workload_id TEXT        NOT NULL,
    log         TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (job_id, role, attempt)
);
