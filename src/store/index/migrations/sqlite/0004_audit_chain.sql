-- The NEN 7513 audit trail as a hash chain (issue 5), and the outbox of PS3.15 audit
-- messages waiting for the syslog receiver (RFC 5424/5425).
--
-- Records written before this migration stay in audit_event_v1, outside the chain.
ALTER TABLE audit_event RENAME TO audit_event_v1;

-- One row per audited operation. hash = SHA-256(prev_hash ":" canonical record), where the
-- canonical record is the JSON of every column but the hashes (store::index::audit).
CREATE TABLE audit_record (
    seq                INTEGER PRIMARY KEY,
    time               TEXT NOT NULL,
    operation          TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    detail             TEXT NOT NULL,
    gateway            TEXT NOT NULL,
    certificate_sha256 TEXT NOT NULL,
    organisation_ura   TEXT NOT NULL,
    professional_uzi   TEXT NOT NULL,
    role               TEXT NOT NULL,
    purpose_of_use     TEXT NOT NULL,
    token_id           TEXT NOT NULL,
    source_address     TEXT NOT NULL,
    grounds            TEXT NOT NULL,
    -- JSON arrays of strings.
    patient_ids        TEXT NOT NULL,
    study_uids         TEXT NOT NULL,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL
);

-- Lookup per patient (BSN): one row per record and patient.
CREATE TABLE audit_record_patient (
    seq        INTEGER NOT NULL REFERENCES audit_record (seq),
    patient_id TEXT NOT NULL,
    PRIMARY KEY (patient_id, seq)
);

-- The head of the chain: the one row every append locks (a write transaction in SQLite).
CREATE TABLE audit_chain_head (
    id   INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Syslog messages not yet written to the receiver. A sender claims rows until
-- claimed_until (Unix seconds; also the next attempt after a failure) and deletes them once
-- the write succeeded.
CREATE TABLE audit_outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    seq           INTEGER NOT NULL,
    message       TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    claimed_by    TEXT NOT NULL DEFAULT '',
    claimed_until INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL
);
CREATE INDEX audit_outbox_due_idx ON audit_outbox (claimed_until, id);
