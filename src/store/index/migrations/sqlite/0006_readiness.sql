-- One row that /ready and the audit trail's recovery rewrite to prove the index takes
-- writes (issue 12): a real committed change, which a full disk or a read-only file refuses.
CREATE TABLE readiness_probe (
    id        INTEGER PRIMARY KEY,
    probed_at TEXT NOT NULL
);
