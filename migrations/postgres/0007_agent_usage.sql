-- What Icarus itself measured of each agent (the runtime's stats, not the
-- agent's own reports): per job, role and attempt, the latest reading and the
-- peak memory, kept after the agent ends. One row each, upserted by the
-- leader's usage sampler (src/usage.rs).
CREATE TABLE agent_usage (
    job_id            TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    role              TEXT    NOT NULL,
    attempt           INTEGER NOT NULL,
    cpu_seconds       DOUBLE PRECISION NOT NULL,
    memory_bytes      BIGINT NOT NULL,
    memory_peak_bytes BIGINT NOT NULL,
    sampled_at        TIMESTAMPTZ NOT NULL,
    -- The reading before, for the CPU used in between (the upsert moves
    -- the latest here, so one write does it: no read first).
    previous_cpu_seconds DOUBLE PRECISION,
    previous_sampled_at  TIMESTAMPTZ,
    PRIMARY KEY (job_id, role, attempt)
);

-- Who a telemetry row comes from: 'agent' (a progress report) or 'icarus'
-- (a measured sample: cpu_usage over the last interval, ram_usage_mb now).
ALTER TABLE telemetry ADD COLUMN source TEXT NOT NULL DEFAULT 'agent';
