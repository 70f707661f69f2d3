-- Leases: which process may reconcile when several `icarus serve` share one
-- database. One row per lease name. Times are the database's own clock, in
-- milliseconds since the epoch, so replicas on hosts whose clocks disagree
-- still agree on who holds it. `version` grows by one at every acquisition:
-- a write fenced by an older version is refused (src/store/sql/lease.rs).
CREATE TABLE leases (
    name           TEXT    PRIMARY KEY,
    holder         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    acquired_at_ms INTEGER NOT NULL,
    renewed_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
