-- An index that stays fast at national size (issue 16, item 7; docs/performance.md "Index at
-- national size"): what EXPLAIN showed the hot queries need with 100,000 studies and
-- 2,000,000 instances.

-- QIDO-RS ModalitiesInStudy is a semi-join per study (EXISTS ... se.study_pk = st.id AND
-- se.modality IN (...)) while the studies are walked in StudyInstanceUID order: with
-- (study_pk) alone every candidate study fetched its series rows from the heap to test the
-- modality (68 ms for NM); (study_pk, modality) answers it from the index. It serves every
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
-- serve it and every search walked the studies (73 ms, 220 ms when nothing matched). Each
-- patient's name is kept here as the suffixes of patient_name_norm that start at the
-- beginning or after '^', ' ' or '=': a fuzzy search is one prefix LIKE on `word`
-- (COLLATE "C": a plain btree serves LIKE 'abc%' whatever the database's collation).
-- Written with the patient row (store::index::sql::instances), gone with it (CASCADE).
CREATE TABLE patient_name_word (
    word       TEXT COLLATE "C" NOT NULL,
    patient_pk BIGINT NOT NULL REFERENCES patient (id) ON DELETE CASCADE,
    PRIMARY KEY (word, patient_pk)
);
CREATE INDEX patient_name_word_patient_idx ON patient_name_word (patient_pk);

INSERT INTO patient_name_word (word, patient_pk)
SELECT DISTINCT substr(p.patient_name_norm, i), p.id
FROM patient p, generate_series(1, length(p.patient_name_norm)) AS i
WHERE (i = 1 OR substr(p.patient_name_norm, i - 1, 1) IN ('^', ' ', '='))
  AND substr(p.patient_name_norm, i) <> '';

-- The publisher's question "which studies changed since their publication" (every pass, every
-- /metrics scrape) compared study.arrivals with xds_publication.arrivals for every study: a
-- join over all of them, 38 ms at 100,000 studies and growing with the archive. The study
-- row now keeps the arrivals its last publication covered (registry_submit writes both in one
-- transaction; 0 while there is none), and only the studies where they differ are indexed:
-- the ones due, a handful. It replaces study_last_arrival_idx, which only this query used.
ALTER TABLE study ADD COLUMN published_arrivals BIGINT NOT NULL DEFAULT 0;
UPDATE study SET published_arrivals = (
    SELECT p.arrivals FROM xds_publication p WHERE p.study_instance_uid = study.study_instance_uid
) WHERE study_instance_uid IN (SELECT study_instance_uid FROM xds_publication);
DROP INDEX study_last_arrival_idx;
CREATE INDEX study_unpublished_idx ON study (last_arrival, id) WHERE arrivals > published_arrivals;
