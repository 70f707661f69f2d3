-- How far each notification target has been sent through job_events (the
-- outbox): a restart resumes there, so no notification is lost to a crash.
CREATE TABLE notification_cursors (
    target        TEXT   PRIMARY KEY,  -- SHA-256 of the target URL (URLs can hold tokens)
    last_event_id BIGINT NOT NULL
);
