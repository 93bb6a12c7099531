-- An index that stays fast at national size (issue 16, item 7; docs/performance.md "Index at
-- national size"): what EXPLAIN QUERY PLAN showed the hot queries need with 100,000 studies
-- and 2,000,000 instances.

-- QIDO-RS ModalitiesInStudy is a semi-join per study (EXISTS ... se.study_pk = st.id AND
-- se.modality IN (...)) while the studies are walked in StudyInstanceUID order. SQLite ran
-- the subquery on series_modality_idx, i.e. every series of that modality for every study
-- (7.7 s for NM); with (study_pk, modality) it is one index probe per study. It serves every
-- lookup by study_pk as well, so it replaces series_study_idx.
CREATE INDEX series_study_modality_idx ON series (study_pk, modality);
DROP INDEX series_study_idx;
-- And the other way round for a modality few or no studies have, where walking the studies
-- finds nothing for long (PostgreSQL then starts from the modality's series; 0.2 ms instead
-- of a walk through all studies): replaces series_modality_idx, which it serves as well.
CREATE INDEX series_modality_study_idx ON series (modality, study_pk);
DROP INDEX series_modality_idx;

-- QIDO-RS fuzzymatching on PatientName: a prefix of the whole normalised name or of any of
-- its components or words. As three LIKE patterns, two with a leading '%', no index could
-- serve it and every search walked the studies (19 ms, 220 ms when nothing matched). Each
-- patient's name is kept here as the suffixes of patient_name_norm that start at the
-- beginning or after '^', ' ' or '=': a fuzzy search is one prefix LIKE on `word` (the
-- connections set case_sensitive_like, so the primary key serves it). Written with the
-- patient row (store::index::sql::instances), gone with it (CASCADE: foreign keys are on).
CREATE TABLE patient_name_word (
    word       TEXT NOT NULL,
    patient_pk INTEGER NOT NULL REFERENCES patient (id) ON DELETE CASCADE,
    PRIMARY KEY (word, patient_pk)
) WITHOUT ROWID;
CREATE INDEX patient_name_word_patient_idx ON patient_name_word (patient_pk);

WITH RECURSIVE pos (pk, name, i) AS (
    SELECT id, patient_name_norm, 1 FROM patient WHERE patient_name_norm <> ''
    UNION ALL
    SELECT pk, name, i + 1 FROM pos WHERE i < length(name)
)
INSERT OR IGNORE INTO patient_name_word (word, patient_pk)
SELECT substr(name, i), pk FROM pos
WHERE (i = 1 OR substr(name, i - 1, 1) IN ('^', ' ', '=')) AND substr(name, i) <> '';

-- The publisher's question "which studies changed since their publication" (every pass, every
-- /metrics scrape) compared study.arrivals with xds_publication.arrivals for every study: a
-- join over all of them, 38 ms at 100,000 studies and growing with the archive. The study
-- row now keeps the arrivals its last publication covered (registry_submit writes both in one
-- transaction; 0 while there is none), and only the studies where they differ are indexed:
-- the ones due, a handful. It replaces study_last_arrival_idx, which only this query used.
ALTER TABLE study ADD COLUMN published_arrivals INTEGER NOT NULL DEFAULT 0;
UPDATE study SET published_arrivals = (
    SELECT p.arrivals FROM xds_publication p WHERE p.study_instance_uid = study.study_instance_uid
) WHERE study_instance_uid IN (SELECT study_instance_uid FROM xds_publication);
DROP INDEX study_last_arrival_idx;
CREATE INDEX study_unpublished_idx ON study (last_arrival, id) WHERE arrivals > published_arrivals;
