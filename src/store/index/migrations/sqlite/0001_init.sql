-- beeldbrug index, SQLite. Attribute values are TEXT, '' when absent.
-- LIKE uses the indexes because every connection sets PRAGMA case_sensitive_like = ON.

CREATE TABLE patient (
    id                   INTEGER PRIMARY KEY,
    patient_id           TEXT NOT NULL UNIQUE,
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    patient_name         TEXT NOT NULL DEFAULT '',
    patient_name_norm    TEXT NOT NULL DEFAULT '',
    patient_birth_date   TEXT NOT NULL DEFAULT '',
    patient_sex          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX patient_name_idx ON patient (patient_name);
CREATE INDEX patient_name_norm_idx ON patient (patient_name_norm);

CREATE TABLE study (
    id                            INTEGER PRIMARY KEY,
    study_instance_uid            TEXT NOT NULL UNIQUE,
    patient_pk                    INTEGER NOT NULL REFERENCES patient (id),
    study_date                    TEXT NOT NULL DEFAULT '',
    study_time                    TEXT NOT NULL DEFAULT '',
    accession_number              TEXT NOT NULL DEFAULT '',
    study_id                      TEXT NOT NULL DEFAULT '',
    study_description             TEXT NOT NULL DEFAULT '',
    referring_physician_name      TEXT NOT NULL DEFAULT '',
    referring_physician_name_norm TEXT NOT NULL DEFAULT ''
);
CREATE INDEX study_patient_idx ON study (patient_pk);
CREATE INDEX study_date_idx ON study (study_date);
CREATE INDEX study_accession_number_idx ON study (accession_number);

CREATE TABLE series (
    id                  INTEGER PRIMARY KEY,
    series_instance_uid TEXT NOT NULL UNIQUE,
    study_pk            INTEGER NOT NULL REFERENCES study (id),
    modality            TEXT NOT NULL DEFAULT '',
    series_number       TEXT NOT NULL DEFAULT '',
    series_description  TEXT NOT NULL DEFAULT '',
    body_part_examined  TEXT NOT NULL DEFAULT '',
    series_date         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX series_study_idx ON series (study_pk);
CREATE INDEX series_modality_idx ON series (modality);

CREATE TABLE instance (
    id                  INTEGER PRIMARY KEY,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    series_pk           INTEGER NOT NULL REFERENCES series (id),
    sop_class_uid       TEXT NOT NULL DEFAULT '',
    instance_number     TEXT NOT NULL DEFAULT '',
    -- InstanceNumber as an integer for ordering; 9223372036854775807 when not numeric.
    instance_number_int INTEGER NOT NULL,
    rows                TEXT NOT NULL DEFAULT '',
    columns             TEXT NOT NULL DEFAULT '',
    number_of_frames    TEXT NOT NULL DEFAULT '',
    transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    blob_key            TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL,
    stored_at           TEXT NOT NULL
);
CREATE INDEX instance_series_idx ON instance (series_pk);

CREATE TABLE audit_event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        TEXT NOT NULL,
    operation   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    source      TEXT NOT NULL,
    patient_ids TEXT NOT NULL,
    study_uids  TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
