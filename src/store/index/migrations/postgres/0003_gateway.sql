-- Gateway mode: studies fetched from the local PACS (cache state), and the queue of
-- instances to forward to the PACS by C-STORE.

CREATE TABLE cached_study (
    study_instance_uid TEXT PRIMARY KEY,
    -- Instances the PACS reported for the study when it was last checked.
    pacs_instances     BIGINT NOT NULL,
    -- 1 once the cache held all of them after a fetch; a partial fetch stays 0.
    complete           BIGINT NOT NULL,
    -- Unix seconds: last check against the PACS, last time the study was served.
    checked_at         BIGINT NOT NULL,
    last_access        BIGINT NOT NULL
);
CREATE INDEX cached_study_lru_idx ON cached_study (last_access);

CREATE TABLE forward_job (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sop_instance_uid   TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sender             TEXT NOT NULL,
    -- queued, done, failed (gave up after the last attempt)
    state              TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at    BIGINT NOT NULL,
    last_error         TEXT NOT NULL DEFAULT '',
    created_at         TEXT NOT NULL
);
CREATE INDEX forward_job_due_idx ON forward_job (state, next_attempt_at);
