-- Delete and retention (docs/dicomweb.md "Delete").
--
-- blob_deletion: blobs whose index rows are gone. A delete removes the rows and queues their
-- blob keys here in one transaction, then removes the files and the queue rows; what a crash
-- leaves is finished at the next start (store::delete::sweep).
CREATE TABLE blob_deletion (
    blob_key  TEXT PRIMARY KEY,
    -- Unix seconds.
    queued_at INTEGER NOT NULL
);

-- Studies received by STOW-RS (sent by another hospital), for storage.keep_received_days.
CREATE TABLE received_study (
    study_instance_uid TEXT PRIMARY KEY,
    -- The caller that sent it last (participant name, token subject or "anonymous").
    sender             TEXT NOT NULL,
    -- Unix seconds of the last receipt: retention counts from here.
    received_at        INTEGER NOT NULL
);
CREATE INDEX received_study_age_idx ON received_study (received_at);

-- A queued blob deletion skips a key that a new row references again (re-sent meanwhile).
CREATE INDEX instance_blob_key_idx ON instance (blob_key);
