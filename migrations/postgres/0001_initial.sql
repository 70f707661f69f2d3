-- Icarus schema for PostgreSQL. The seed's tables (jobs, telemetry, audit_logs) keep
-- their columns; jobs gains the full spec/status documents and a resource_version
-- for compare-and-swap writes. job_events and agent_reports are new.

CREATE TABLE jobs (
    id                   BIGSERIAL PRIMARY KEY,
    job_id               TEXT    NOT NULL UNIQUE,
    task                 TEXT    NOT NULL,
    project_path         TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    builder_container_id TEXT,
    checker_container_id TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    completed_at         TIMESTAMPTZ,
    error_message        TEXT,
    spec                 JSONB NOT NULL,  -- JSON: JobSpec
    status_detail        JSONB NOT NULL,  -- JSON: JobStatus
    resource_version     BIGINT NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_by_created ON jobs (created_at, id);
CREATE INDEX jobs_by_status ON jobs (status, created_at, id);

CREATE TABLE telemetry (
    id           BIGSERIAL PRIMARY KEY,
    job_id       TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    timestamp    TIMESTAMPTZ NOT NULL,
    cpu_usage    DOUBLE PRECISION,
    ram_usage_mb DOUBLE PRECISION,
    current_tool TEXT,
    role         TEXT    NOT NULL,
    attempt      INTEGER NOT NULL
);
CREATE INDEX telemetry_by_job ON telemetry (job_id, id);

CREATE TABLE audit_logs (
    id           BIGSERIAL PRIMARY KEY,
    job_id       TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    audit_report JSONB NOT NULL,  -- JSON: the checker's report, as posted
    created_at   TIMESTAMPTZ NOT NULL,
    attempt      INTEGER NOT NULL
);
CREATE INDEX audit_logs_by_job ON audit_logs (job_id, id);

-- Append-only: one row per phase transition.
CREATE TABLE job_events (
    id               BIGSERIAL PRIMARY KEY,
    job_id           TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    from_phase       TEXT,
    to_phase         TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    message          TEXT,
    resource_version BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

-- Completion and error reports agents posted through the callback.
CREATE TABLE agent_reports (
    id         BIGSERIAL PRIMARY KEY,
    job_id     TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    role       TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    outcome    TEXT    NOT NULL,  -- completed | error
    message    TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_reports_by_job ON agent_reports (job_id, attempt, id);
