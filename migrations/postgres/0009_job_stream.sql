-- One ordered stream per job: what its agents printed, line by line, and
-- its phase transitions, each at a position (seq) from one per-job counter.
-- The WebSocket stream and GET /jobs/{id}/logs serve it; a client resumes
-- after the last position it saw.
--
-- jobs.stream_seq is the counter: a writer takes the next positions with
-- UPDATE ... RETURNING, which holds the job's row until its transaction
-- commits, so positions become visible in their order, without gaps.
ALTER TABLE jobs ADD COLUMN stream_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE job_stream (
    job_id     TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT    NOT NULL,  -- log | status
    role       TEXT,              -- log: builder | checker
    attempt    INTEGER,           -- log
    stream     TEXT,              -- log: stdout | stderr
    message    TEXT    NOT NULL,  -- log: the line; status: the JobStatus document (JSON)
    created_at TIMESTAMPTZ NOT NULL,  -- log: when the agent printed it, as its runtime says
    PRIMARY KEY (job_id, seq)
);
-- A follower resuming finds the last line it stored of its agent.
CREATE INDEX job_stream_by_agent ON job_stream (job_id, role, attempt, created_at);
