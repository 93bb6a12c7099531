-- The XDS-I registry (docs/xds.md): what the publisher registered, and what it needs to know
-- of each study to publish it once complete.
--
-- study.last_arrival (Unix seconds) and study.arrivals (instances stored or replaced, a
-- counter): a study is complete once nothing arrived for xds.quiet_secs, and changed since its
-- publication when arrivals moved past what the publication saw. Studies indexed before this
-- migration count as one arrival long ago: published once.
ALTER TABLE study ADD COLUMN last_arrival INTEGER NOT NULL DEFAULT 0;
ALTER TABLE study ADD COLUMN arrivals INTEGER NOT NULL DEFAULT 0;
UPDATE study SET arrivals = 1;
CREATE INDEX study_last_arrival_idx ON study (last_arrival);

-- DocumentEntries, SubmissionSets (and Folders) as ebRIM objects (metadata: the object as
-- JSON, ebrim::RegistryObject), with the columns the stored queries select on. status is
-- the availabilityStatus URN; it wins over the one in metadata.
CREATE TABLE xds_object (
    id                 INTEGER PRIMARY KEY,
    entry_uuid         TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    unique_id          TEXT NOT NULL,
    patient_id         TEXT NOT NULL,
    status             TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL DEFAULT '',
    metadata           TEXT NOT NULL
);
CREATE INDEX xds_object_patient_idx ON xds_object (patient_id, kind);
CREATE INDEX xds_object_unique_id_idx ON xds_object (unique_id);
CREATE INDEX xds_object_study_idx ON xds_object (study_instance_uid);

-- Associations (HasMember, RPLC) between them.
CREATE TABLE xds_association (
    id               INTEGER PRIMARY KEY,
    entry_uuid       TEXT NOT NULL UNIQUE,
    association_type TEXT NOT NULL,
    source_uuid      TEXT NOT NULL,
    target_uuid      TEXT NOT NULL,
    status           TEXT NOT NULL,
    metadata         TEXT NOT NULL
);
CREATE INDEX xds_association_source_idx ON xds_association (source_uuid);
CREATE INDEX xds_association_target_idx ON xds_association (target_uuid);

-- The last publication of each study: its DocumentEntry ('' when the study was skipped, e.g.
-- no valid BSN, or not yet published) and the study's arrivals it covered; and which
-- publisher is working on it until when (several gateways may share one index).
CREATE TABLE xds_publication (
    study_instance_uid TEXT PRIMARY KEY,
    entry_uuid         TEXT NOT NULL,
    arrivals           INTEGER NOT NULL,
    published_at       INTEGER NOT NULL,
    claimed_by         TEXT NOT NULL DEFAULT '',
    claimed_until      INTEGER NOT NULL DEFAULT 0
);
