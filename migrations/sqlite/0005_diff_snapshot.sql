-- The snapshot (a Git tree id) a diff was made from: what the reviewer saw
-- and what an approval publishes. None where workspaces cannot be read.
ALTER TABLE job_diffs ADD COLUMN snapshot TEXT;
