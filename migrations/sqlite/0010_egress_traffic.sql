-- What each agent reached, or was refused, through the egress proxy
-- (src/egress): one row per job, role, attempt, destination and verdict,
-- counting connections and bytes, so a flood of refusals is one row, not a
-- row each. An agent's hundredth distinct destination and those after it
-- are counted under the host '*' (port 0): an agent cannot grow the table
-- without limit by asking for ever new names. Each row's first connection
-- is also an entry of the job's stream (job_stream, kind 'egress').
CREATE TABLE egress_traffic (
    job_id         TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    role           TEXT    NOT NULL,
    attempt        INTEGER NOT NULL,
    host           TEXT    NOT NULL,
    port           INTEGER NOT NULL,
    -- 'allowed' or 'refused'
    verdict        TEXT    NOT NULL,
    -- The latest refusal's words, as the agent was told them.
    reason         TEXT,
    connections    INTEGER NOT NULL,
    bytes_sent     INTEGER NOT NULL,
    bytes_received INTEGER NOT NULL,
    -- Connections cut off at the agent's byte budget.
    cut_at_budget  INTEGER NOT NULL,
    first_at       TEXT    NOT NULL,
    last_at        TEXT    NOT NULL,
    PRIMARY KEY (job_id, role, attempt, host, port, verdict)
);
