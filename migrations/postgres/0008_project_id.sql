-- The project a job belongs to (the original service's `project_id`), as a
-- column beside the spec document that also holds it, so that
-- `GET /jobs?project_id=` reads an index. Jobs from before it belong to the
-- default project, as a spec without the field reads.
ALTER TABLE jobs ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX jobs_by_project ON jobs (project_id, created_at, id);
