-- The computed attributes of a study (PS3.4 C.6.1.1.4: NumberOfStudyRelatedSeries,
-- NumberOfStudyRelatedInstances, ModalitiesInStudy, SOPClassesInStudy) kept on the study row
-- (issue 16 item 7, docs/performance.md "Index at national size"). Computed per QIDO-RS page
-- they were three aggregate queries reading every instance row of the page's studies (a page
-- of 101 CT studies: ~8,000 rows). Maintained in the transaction that writes the instance
-- rows (store::index::sql::instances: added to on ingest, counted again from the rows of a
-- study that lost or moved instances or series). Values lists are sorted (byte order) and
-- joined with '\', without empty values, as the page's aggregates returned them.
ALTER TABLE study ADD COLUMN num_series INTEGER NOT NULL DEFAULT 0;
ALTER TABLE study ADD COLUMN num_instances INTEGER NOT NULL DEFAULT 0;
ALTER TABLE study ADD COLUMN modalities TEXT NOT NULL DEFAULT '';
ALTER TABLE study ADD COLUMN sop_classes TEXT NOT NULL DEFAULT '';

WITH m AS (SELECT DISTINCT study_pk, modality FROM series WHERE modality <> ''),
     s AS (SELECT study_pk, COUNT(*) AS n FROM series GROUP BY study_pk),
     v AS (SELECT study_pk, group_concat(modality, '\' ORDER BY modality) AS ms
           FROM m GROUP BY study_pk)
UPDATE study SET num_series = s.n, modalities = COALESCE(v.ms, '')
FROM s LEFT JOIN v ON v.study_pk = s.study_pk WHERE s.study_pk = study.id;

WITH c AS (SELECT se.study_pk, i.sop_class_uid, COUNT(*) AS n
           FROM instance i JOIN series se ON se.id = i.series_pk
           GROUP BY se.study_pk, i.sop_class_uid),
     v AS (SELECT study_pk, SUM(n) AS n,
                  group_concat(sop_class_uid, '\' ORDER BY sop_class_uid)
                      FILTER (WHERE sop_class_uid <> '') AS cs
           FROM c GROUP BY study_pk)
UPDATE study SET num_instances = v.n, sop_classes = COALESCE(v.cs, '')
FROM v WHERE v.study_pk = study.id;

-- A page of studies sorted by StudyInstanceUID is picked from the matches' index entries
-- first (store::index::sql::query, find_sql), then only its rows are read: with the UID in
-- these indexes the matches of a patient (name search) or a date range need no study row
-- to be sorted. They replace the indexes on the first column alone, which they serve as well.
CREATE INDEX study_patient_uid_idx ON study (patient_pk, study_instance_uid);
DROP INDEX study_patient_idx;
CREATE INDEX study_date_uid_idx ON study (study_date, study_instance_uid);
DROP INDEX study_date_idx;
