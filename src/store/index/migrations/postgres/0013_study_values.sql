-- The computed attributes of a study (PS3.4 C.6.1.1.4: NumberOfStudyRelatedSeries,
-- NumberOfStudyRelatedInstances, ModalitiesInStudy, SOPClassesInStudy) kept on the study row
-- (issue 16 item 7, docs/performance.md "Index at national size"). Computed per QIDO-RS page
-- they were three aggregate queries reading every instance row of the page's studies (a page
-- of 101 CT studies: ~8,000 rows). Maintained in the transaction that writes the instance
-- rows (store::index::sql::instances: added to on ingest, counted again from the rows of a
-- study that lost or moved instances or series). Values lists are sorted (byte order, hence
-- COLLATE "C") and joined with '\', without empty values, as the page's aggregates returned
-- them.
ALTER TABLE study
    ADD COLUMN num_series BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN num_instances BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN modalities TEXT NOT NULL DEFAULT '',
    ADD COLUMN sop_classes TEXT NOT NULL DEFAULT '';

UPDATE study SET num_series = s.n, modalities = s.ms
FROM (SELECT study_pk, COUNT(*) AS n,
             COALESCE(string_agg(DISTINCT modality COLLATE "C", '\' ORDER BY modality COLLATE "C")
                      FILTER (WHERE modality <> ''), '') AS ms
      FROM series GROUP BY study_pk) s
WHERE s.study_pk = study.id;

UPDATE study SET num_instances = v.n, sop_classes = v.cs
FROM (SELECT study_pk, SUM(n) AS n,
             COALESCE(string_agg(sop_class_uid, '\' ORDER BY sop_class_uid COLLATE "C")
                      FILTER (WHERE sop_class_uid <> ''), '') AS cs
      FROM (SELECT se.study_pk, i.sop_class_uid, COUNT(*) AS n
            FROM instance i JOIN series se ON se.id = i.series_pk
            GROUP BY se.study_pk, i.sop_class_uid) c
      GROUP BY study_pk) v
WHERE v.study_pk = study.id;

-- A page of studies sorted by StudyInstanceUID is picked from the matches' index entries
-- first (store::index::sql::query, find_sql), then only its rows are read: with the UID and
-- the row id in these indexes the matches of a patient (name search) or a date range are
-- sorted from an index-only scan instead of a heap fetch per match (1,500 for a common
-- given name). They replace the indexes on the first column alone, which they serve as well.
CREATE INDEX study_patient_uid_idx ON study (patient_pk, study_instance_uid) INCLUDE (id);
DROP INDEX study_patient_idx;
CREATE INDEX study_date_uid_idx ON study (study_date, study_instance_uid) INCLUDE (id);
DROP INDEX study_date_idx;
-- And the walk in UID order that the planner takes for a key the studies are not indexed by
-- (ModalitiesInStudy: 5,000 studies walked for the 101 with an NM series) reads the row id
-- from the index instead of each study row. SQLite's unique index has the rowid already.
CREATE INDEX study_uid_id_idx ON study (study_instance_uid) INCLUDE (id);
