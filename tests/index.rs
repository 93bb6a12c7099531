//! One test suite for the `Index` trait, run against both backends: SQLite (a file in a temp
//! dir) and PostgreSQL (a fresh database per test on the server named by
//! `BEELDBRUG_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! The PostgreSQL tests fail, rather than skip, when no server is reachable.

use beeldbrug::core::query::{computed, indexed_attr_by_keyword};
use beeldbrug::core::{Level, Match, Matcher, Query, Selection};
use beeldbrug::store::index::{CachedStudy, PostgresIndex, SqliteIndex};
use beeldbrug::store::{AuditEvent, Index, IndexError, InstanceRecord, UpsertOutcome};
use dicom_core::Tag;
use std::panic::AssertUnwindSafe;

#[path = "common/postgres.rs"]
mod pg;

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const SR: &str = "1.2.840.10008.5.1.4.1.1.88.11";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn record(values: &[(&str, &str)]) -> InstanceRecord {
    let mut r = InstanceRecord {
        transfer_syntax_uid: EXPLICIT_LE.to_string(),
        ..Default::default()
    };
    for (keyword, value) in values {
        let attr = indexed_attr_by_keyword(keyword).unwrap_or_else(|| panic!("{keyword}"));
        r.values.insert(attr.tag, value.to_string());
    }
    r.blob_key = format!(
        "{}/{}/{}.dcm",
        r.study_instance_uid(),
        r.series_instance_uid(),
        r.sop_instance_uid()
    );
    r.size_bytes = 1000 + r.sop_instance_uid().len() as u64;
    r
}

struct Inst {
    patient: (&'static str, &'static str),
    study: (&'static str, &'static str, &'static str),
    series: (&'static str, &'static str),
    sop: (&'static str, &'static str, &'static str),
}

/// Patients P1 (Müller^Zoë: studies 1.2.1 and 1.2.2), P2 (Jansen^Piet: 1.3.1),
/// P3 (Mulder^Anna: 1.4.1); 8 instances in 5 series.
fn fixture() -> Vec<InstanceRecord> {
    const P1: (&str, &str) = ("P1", "Müller^Zoë");
    const P2: (&str, &str) = ("P2", "Jansen^Piet");
    const P3: (&str, &str) = ("P3", "Mulder^Anna");
    let insts = [
        Inst {
            patient: P1,
            study: ("1.2.1", "20240110", "A1"),
            series: ("1.2.1.1", "CT"),
            sop: ("1.2.1.1.9", CT, "1"),
        },
        Inst {
            patient: P1,
            study: ("1.2.1", "20240110", "A1"),
            series: ("1.2.1.1", "CT"),
            sop: ("1.2.1.1.5", CT, "2"),
        },
        Inst {
            patient: P1,
            study: ("1.2.1", "20240110", "A1"),
            series: ("1.2.1.1", "CT"),
            sop: ("1.2.1.1.1", CT, "10"),
        },
        Inst {
            patient: P1,
            study: ("1.2.1", "20240110", "A1"),
            series: ("1.2.1.2", "SR"),
            sop: ("1.2.1.2.1", SR, "abc"),
        },
        Inst {
            patient: P1,
            study: ("1.2.2", "20240301", "A_2"),
            series: ("1.2.2.1", "MR"),
            sop: ("1.2.2.1.1", MR, "1"),
        },
        Inst {
            patient: P2,
            study: ("1.3.1", "20230615", "AX2"),
            series: ("1.3.1.1", "CT"),
            sop: ("1.3.1.1.1", CT, "1"),
        },
        Inst {
            patient: P3,
            study: ("1.4.1", "20250101", "100%"),
            series: ("1.4.1.1", "MR"),
            sop: ("1.4.1.1.1", MR, "1"),
        },
        Inst {
            patient: P3,
            study: ("1.4.1", "20250101", "100%"),
            series: ("1.4.1.1", "MR"),
            sop: ("1.4.1.1.2", MR, "2"),
        },
    ];
    insts
        .iter()
        .map(|i| {
            record(&[
                ("PatientID", i.patient.0),
                ("PatientName", i.patient.1),
                ("PatientBirthDate", "19800101"),
                ("PatientSex", "O"),
                ("StudyInstanceUID", i.study.0),
                ("StudyDate", i.study.1),
                ("StudyTime", "101500"),
                ("AccessionNumber", i.study.2),
                ("StudyDescription", "Onderzoek"),
                ("ReferringPhysicianName", "de Vries^Jan"),
                ("SeriesInstanceUID", i.series.0),
                ("Modality", i.series.1),
                ("SeriesNumber", "1"),
                ("SOPInstanceUID", i.sop.0),
                ("SOPClassUID", i.sop.1),
                ("InstanceNumber", i.sop.2),
                ("Rows", "512"),
                ("Columns", "512"),
            ])
        })
        .collect()
}

async fn load(index: &dyn Index) {
    for r in fixture() {
        assert_eq!(
            index.upsert_instance(&r).await.unwrap(),
            UpsertOutcome::Inserted
        );
    }
}

fn attr(keyword: &str) -> &'static beeldbrug::core::IndexedAttr {
    indexed_attr_by_keyword(keyword).unwrap()
}

fn tag(keyword: &str) -> Tag {
    attr(keyword).tag
}

async fn find(index: &dyn Index, level: Level, keys: &[(&str, Matcher)]) -> Vec<Match> {
    let mut q = Query::new(level);
    for (keyword, m) in keys {
        q = q.with_key(attr(keyword), m.clone());
    }
    index.find(&q).await.unwrap()
}

/// The values of one attribute over the matches.
fn column(matches: &[Match], keyword: &str) -> Vec<String> {
    matches.iter().map(|m| m[&tag(keyword)].clone()).collect()
}

async fn uids(index: &dyn Index, level: Level, keys: &[(&str, Matcher)]) -> Vec<String> {
    let key = match level {
        Level::Patient => "PatientID",
        Level::Study => "StudyInstanceUID",
        Level::Series => "SeriesInstanceUID",
        Level::Image => "SOPInstanceUID",
    };
    column(&find(index, level, keys).await, key)
}

fn single(v: &str) -> Matcher {
    Matcher::Single(v.to_string())
}

fn wild(v: &str) -> Matcher {
    Matcher::Wildcard(v.to_string())
}

fn range(from: Option<&str>, to: Option<&str>) -> Matcher {
    Matcher::Range {
        from: from.map(str::to_string),
        to: to.map(str::to_string),
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours (each runs on both backends)

async fn find_at_each_level(index: &dyn Index) {
    load(index).await;

    let patients = find(index, Level::Patient, &[]).await;
    assert_eq!(column(&patients, "PatientID"), ["P1", "P2", "P3"]);
    let p1 = &patients[0];
    assert_eq!(p1[&tag("PatientName")], "Müller^Zoë");
    assert_eq!(p1[&tag("IssuerOfPatientID")], "");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_STUDIES], "2");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_SERIES], "3");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_INSTANCES], "5");
    assert!(!p1.contains_key(&tag("StudyInstanceUID")));

    let studies = find(index, Level::Study, &[]).await;
    assert_eq!(
        column(&studies, "StudyInstanceUID"),
        ["1.2.1", "1.2.2", "1.3.1", "1.4.1"]
    );
    let s = &studies[0];
    assert_eq!(s[&tag("PatientID")], "P1");
    assert_eq!(s[&tag("PatientName")], "Müller^Zoë");
    assert_eq!(s[&tag("StudyDate")], "20240110");
    assert_eq!(s[&tag("ReferringPhysicianName")], "de Vries^Jan");
    assert_eq!(s[&tag("StudyID")], "");
    assert_eq!(s[&computed::NUMBER_OF_STUDY_RELATED_SERIES], "2");
    assert_eq!(s[&computed::NUMBER_OF_STUDY_RELATED_INSTANCES], "4");
    assert_eq!(s[&computed::MODALITIES_IN_STUDY], "CT\\SR");
    assert_eq!(s[&computed::SOP_CLASSES_IN_STUDY], format!("{CT}\\{SR}"));
    assert_eq!(studies[3][&computed::MODALITIES_IN_STUDY], "MR");
    assert_eq!(
        studies[3][&computed::NUMBER_OF_STUDY_RELATED_INSTANCES],
        "2"
    );
    assert!(!s.contains_key(&tag("Modality")));
    assert!(!s.contains_key(&computed::NUMBER_OF_PATIENT_RELATED_STUDIES));

    let series = find(index, Level::Series, &[]).await;
    assert_eq!(
        column(&series, "SeriesInstanceUID"),
        ["1.2.1.1", "1.2.1.2", "1.2.2.1", "1.3.1.1", "1.4.1.1"]
    );
    assert_eq!(series[0][&tag("Modality")], "CT");
    assert_eq!(series[0][&tag("StudyInstanceUID")], "1.2.1");
    assert_eq!(series[0][&tag("PatientID")], "P1");
    assert_eq!(series[0][&tag("BodyPartExamined")], "");
    assert_eq!(
        series[0][&computed::NUMBER_OF_SERIES_RELATED_INSTANCES],
        "3"
    );
    assert!(!series[0].contains_key(&computed::MODALITIES_IN_STUDY));

    let images = find(index, Level::Image, &[]).await;
    assert_eq!(images.len(), 8);
    assert_eq!(images[0][&tag("SOPInstanceUID")], "1.2.1.1.1");
    for m in &images {
        for a in beeldbrug::core::INDEXED_ATTRS {
            assert!(
                m.contains_key(&a.tag),
                "{} missing at IMAGE level",
                a.keyword
            );
        }
    }
    assert_eq!(images[0][&tag("InstanceNumber")], "10");
    assert_eq!(images[0][&tag("Rows")], "512");
    assert_eq!(images[0][&tag("NumberOfFrames")], "");
    assert_eq!(images[0][&tag("SOPClassUID")], CT);
}

async fn reupsert_replaces(index: &dyn Index) {
    load(index).await;
    let mut r = fixture().remove(0);
    r.values.insert(tag("InstanceNumber"), "42".into());
    r.values
        .insert(tag("PatientName"), "Müller-de Boer^Zoë".into());
    r.values.remove(&tag("PatientBirthDate")); // absent now: the old value stays
    r.size_bytes = 7;
    assert_eq!(
        index.upsert_instance(&r).await.unwrap(),
        UpsertOutcome::Replaced
    );
    let sop = [("SOPInstanceUID", single("1.2.1.1.9"))];
    let found = find(index, Level::Image, &sop).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][&tag("InstanceNumber")], "42");
    assert_eq!(found[0][&tag("PatientName")], "Müller-de Boer^Zoë");
    assert_eq!(found[0][&tag("PatientBirthDate")], "19800101");
    assert_eq!(find(index, Level::Image, &[]).await.len(), 8);
    let loc = index
        .locate(&Selection {
            sop_instance_uids: vec!["1.2.1.1.9".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(loc.len(), 1);
    assert_eq!(loc[0].size_bytes, 7);

    // Re-sent with a different series, study and patient: it moves, and the emptied
    // parents go away.
    let mut moved = fixture().remove(5); // P2's only instance
    moved
        .values
        .insert(tag("SeriesInstanceUID"), "1.5.1.1".into());
    moved.values.insert(tag("StudyInstanceUID"), "1.5.1".into());
    moved.values.insert(tag("PatientID"), "P5".into());
    assert_eq!(
        index.upsert_instance(&moved).await.unwrap(),
        UpsertOutcome::Replaced
    );
    assert_eq!(uids(index, Level::Patient, &[]).await, ["P1", "P3", "P5"]);
    assert_eq!(
        uids(index, Level::Series, &[("PatientID", single("P5"))]).await,
        ["1.5.1.1"]
    );
    assert!(!uids(index, Level::Study, &[])
        .await
        .contains(&"1.3.1".to_string()));
    assert_eq!(find(index, Level::Image, &[]).await.len(), 8);
}

async fn missing_keys(index: &dyn Index) {
    let full = fixture().remove(0);
    for keyword in ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"] {
        let mut r = full.clone();
        r.values.remove(&tag(keyword));
        let err = index.upsert_instance(&r).await.unwrap_err();
        assert!(
            matches!(err, IndexError::MissingKey(k) if k == keyword),
            "{err}"
        );
    }
    // An empty Patient ID is a key like any other.
    let mut r = full.clone();
    r.values.remove(&tag("PatientID"));
    assert_eq!(
        index.upsert_instance(&r).await.unwrap(),
        UpsertOutcome::Inserted
    );
    let patients = find(index, Level::Patient, &[]).await;
    assert_eq!(column(&patients, "PatientID"), [""]);
    assert_eq!(column(&patients, "PatientName"), ["Müller^Zoë"]);
}

/// A batch is one transaction: all of it is indexed, or (one record without its keys) none.
async fn batch_upserts(index: &dyn Index) {
    let records = fixture();
    let mut broken = records.clone();
    broken[3].values.remove(&tag("SeriesInstanceUID"));
    assert!(index.upsert_instances(&broken).await.is_err());
    assert!(
        find(index, Level::Image, &[]).await.is_empty(),
        "nothing of a failed batch"
    );
    let outcomes = index.upsert_instances(&records).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == UpsertOutcome::Inserted));
    assert_eq!(find(index, Level::Image, &[]).await.len(), records.len());
    let again = index.upsert_instances(&records[..2]).await.unwrap();
    assert_eq!(again, [UpsertOutcome::Replaced, UpsertOutcome::Replaced]);
    assert_eq!(find(index, Level::Image, &[]).await.len(), records.len());
    // Every instance of a batch counts as an arrival of its study, however many of one
    // series come in a row (their patient, study and series rows are written once).
    let study = |uid: &'static str| index.study_arrival(uid);
    let arrivals = |uid: &str| {
        records
            .iter()
            .filter(|r| r.study_instance_uid() == uid)
            .count()
    };
    assert_eq!(
        study("1.2.1").await.unwrap().unwrap().arrivals,
        (arrivals("1.2.1") + 2) as i64,
        "the first batch's and the two re-sent"
    );

    // One batch that moves an instance to another series of another study and patient
    // between two instances of its old series: each lands where its record says, the
    // rows in between are written anew.
    let mut moved = records.clone();
    let (a, b) = (moved[0].clone(), moved[1].clone());
    let mut elsewhere = moved[2].clone();
    for (keyword, value) in [
        ("SeriesInstanceUID", "1.6.1.1"),
        ("StudyInstanceUID", "1.6.1"),
        ("PatientID", "P6"),
    ] {
        elsewhere.values.insert(tag(keyword), value.into());
    }
    moved.truncate(0);
    moved.extend([a, elsewhere, b]);
    let outcomes = index.upsert_instances(&moved).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == UpsertOutcome::Replaced));
    assert_eq!(
        uids(index, Level::Series, &[("PatientID", single("P6"))]).await,
        ["1.6.1.1"]
    );
    assert_eq!(
        uids(
            index,
            Level::Image,
            &[("SeriesInstanceUID", single("1.6.1.1"))]
        )
        .await,
        [records[2].sop_instance_uid()]
    );
    let old_series = records[0].series_instance_uid();
    let left: Vec<String> = records
        .iter()
        .filter(|r| r.series_instance_uid() == old_series)
        .map(|r| r.sop_instance_uid().to_string())
        .filter(|uid| uid != records[2].sop_instance_uid())
        .collect();
    let mut got = uids(
        index,
        Level::Image,
        &[("SeriesInstanceUID", single(old_series))],
    )
    .await;
    got.sort();
    let mut want = left;
    want.sort();
    assert_eq!(got, want);
    assert_eq!(study("1.6.1").await.unwrap().unwrap().arrivals, 1);
    assert_eq!(find(index, Level::Image, &[]).await.len(), records.len());
}

/// The batches a retrieve or an association indexes (`upsert_instances_superseding`): many
/// new instances of one series, one series interleaved with another, the same instance twice
/// in one batch, re-sent instances among new ones. Each instance ends where its record says,
/// with the blob key of its last copy; the keys the rows no longer name are returned.
async fn superseding_batches(index: &dyn Index) {
    let sop = |series: &str, n: usize| format!("{series}.{n}");
    let inst = |series: &str, n: usize, key: &str| {
        let mut r = record(&[
            ("PatientID", "P9"),
            ("PatientName", "Batch^Ina"),
            ("StudyInstanceUID", "1.9.1"),
            ("SeriesInstanceUID", series),
            ("Modality", "CT"),
            ("SOPInstanceUID", &sop(series, n)),
            ("SOPClassUID", CT),
            ("InstanceNumber", &n.to_string()),
        ]);
        r.blob_key = format!("1.9.1/{series}/{n}.{key}.dcm");
        r
    };
    // 600 of one series (more than one multi-row statement), then 5 of another between
    // two of the first.
    let mut first: Vec<InstanceRecord> = (1..=600).map(|n| inst("1.9.1.1", n, "a")).collect();
    let other: Vec<InstanceRecord> = (1..=5).map(|n| inst("1.9.1.2", n, "a")).collect();
    first.splice(300..300, other);
    let superseded = index.upsert_instances_superseding(&first).await.unwrap();
    assert!(superseded.is_empty(), "{superseded:?}");
    let in_series = |series: &'static str| async move {
        uids(
            index,
            Level::Image,
            &[("SeriesInstanceUID", single(series))],
        )
        .await
    };
    assert_eq!(in_series("1.9.1.1").await.len(), 600);
    assert_eq!(in_series("1.9.1.2").await.len(), 5);
    assert_eq!(
        index
            .study_arrival("1.9.1")
            .await
            .unwrap()
            .unwrap()
            .arrivals,
        605
    );
    // The study's computed values (migration 0013) count what the multi-row inserts added.
    let values = study_values(index, "1.9.1").await.expect("the study");
    assert_eq!(values[..2], ["2".to_string(), "605".to_string()]);

    // Re-sent (two of them) among new ones, and one new instance twice: the rows name the
    // last copies, and the keys of the replaced copies come back.
    let batch = vec![
        inst("1.9.1.1", 601, "a"),
        inst("1.9.1.1", 7, "b"),
        inst("1.9.1.1", 602, "a"),
        inst("1.9.1.1", 602, "b"),
        inst("1.9.1.1", 603, "a"),
        inst("1.9.1.2", 3, "b"),
    ];
    let mut superseded = index.upsert_instances_superseding(&batch).await.unwrap();
    superseded.sort();
    assert_eq!(
        superseded,
        [
            "1.9.1/1.9.1.1/602.a.dcm",
            "1.9.1/1.9.1.1/7.a.dcm",
            "1.9.1/1.9.1.2/3.a.dcm"
        ]
    );
    assert_eq!(in_series("1.9.1.1").await.len(), 603);
    assert_eq!(in_series("1.9.1.2").await.len(), 5);
    let values = study_values(index, "1.9.1").await.expect("the study");
    assert_eq!(values[..2], ["2".to_string(), "608".to_string()]);
    for (uid, key) in [
        (sop("1.9.1.1", 7), "1.9.1/1.9.1.1/7.b.dcm"),
        (sop("1.9.1.1", 602), "1.9.1/1.9.1.1/602.b.dcm"),
        (sop("1.9.1.1", 603), "1.9.1/1.9.1.1/603.a.dcm"),
        (sop("1.9.1.2", 3), "1.9.1/1.9.1.2/3.b.dcm"),
    ] {
        let keys = index.blob_keys_in_use(&[key.to_string()]).await.unwrap();
        assert_eq!(keys, [key], "{uid}");
    }

    // One record without a series in a batch of new ones: nothing of the batch is indexed.
    let mut broken: Vec<InstanceRecord> = (700..710).map(|n| inst("1.9.1.1", n, "a")).collect();
    broken[5].values.remove(&tag("SeriesInstanceUID"));
    assert!(index.upsert_instances_superseding(&broken).await.is_err());
    assert_eq!(in_series("1.9.1.1").await.len(), 603);
}

async fn matching(index: &dyn Index) {
    load(index).await;
    // Single value.
    assert_eq!(
        uids(index, Level::Patient, &[("PatientID", single("P2"))]).await,
        ["P2"]
    );
    assert!(uids(index, Level::Patient, &[("PatientID", single("p2"))])
        .await
        .is_empty());
    assert_eq!(
        uids(index, Level::Study, &[("AccessionNumber", single("A1"))]).await,
        ["1.2.1"]
    );
    // Wildcards.
    assert_eq!(
        uids(index, Level::Patient, &[("PatientName", wild("Mül*"))]).await,
        ["P1"]
    );
    assert_eq!(
        uids(index, Level::Patient, &[("PatientName", wild("Mu*"))]).await,
        ["P3"]
    );
    assert_eq!(
        uids(index, Level::Patient, &[("PatientID", wild("P?"))]).await,
        ["P1", "P2", "P3"]
    );
    assert_eq!(
        uids(index, Level::Patient, &[("PatientName", wild("M?ll*"))]).await,
        ["P1"]
    );
    assert_eq!(
        uids(index, Level::Patient, &[("PatientName", wild("*^Pie?"))]).await,
        ["P2"]
    );
    // `_` and `%` in values are literals, not LIKE wildcards.
    assert_eq!(
        uids(index, Level::Study, &[("AccessionNumber", wild("A_*"))]).await,
        ["1.2.2"]
    );
    assert_eq!(
        uids(index, Level::Study, &[("AccessionNumber", wild("1?0%"))]).await,
        ["1.4.1"]
    );
    assert!(
        uids(index, Level::Study, &[("AccessionNumber", wild("1%*"))])
            .await
            .is_empty()
    );
    // Date ranges, closed and open at either end.
    let date = |m| [("StudyDate", m)];
    assert_eq!(
        uids(
            index,
            Level::Study,
            &date(range(Some("20240101"), Some("20240331")))
        )
        .await,
        ["1.2.1", "1.2.2"]
    );
    assert_eq!(
        uids(index, Level::Study, &date(range(Some("20240301"), None))).await,
        ["1.2.2", "1.4.1"]
    );
    assert_eq!(
        uids(index, Level::Study, &date(range(None, Some("20231231")))).await,
        ["1.3.1"]
    );
    assert_eq!(
        uids(index, Level::Study, &date(single("20240110"))).await,
        ["1.2.1"]
    );
    // Dates parsed from request values.
    let parsed = Matcher::parse(attr("StudyDate").kind, "20240110-20240301");
    assert_eq!(
        uids(index, Level::Study, &date(parsed)).await,
        ["1.2.1", "1.2.2"]
    );
    // Time range.
    let time = |m| [("StudyTime", m)];
    assert_eq!(
        uids(
            index,
            Level::Study,
            &time(range(Some("1000"), Some("1100")))
        )
        .await
        .len(),
        4
    );
    assert!(uids(index, Level::Study, &time(range(Some("1100"), None)))
        .await
        .is_empty());
    // UID lists.
    let list = Matcher::UidList(vec!["1.3.1".into(), "1.2.1".into(), "9.9".into()]);
    assert_eq!(
        uids(index, Level::Study, &[("StudyInstanceUID", list)]).await,
        ["1.2.1", "1.3.1"]
    );
    // Universal matching constrains nothing.
    assert_eq!(
        uids(index, Level::Study, &[("StudyDate", Matcher::Universal)])
            .await
            .len(),
        4
    );
    // Several keys together.
    assert_eq!(
        uids(
            index,
            Level::Study,
            &[
                ("PatientID", single("P1")),
                ("StudyDate", range(Some("20240201"), None))
            ]
        )
        .await,
        ["1.2.2"]
    );
    // Keys on a level above the query level go through the join.
    assert_eq!(
        uids(
            index,
            Level::Series,
            &[("PatientName", single("Jansen^Piet"))]
        )
        .await,
        ["1.3.1.1"]
    );
    assert_eq!(
        uids(
            index,
            Level::Image,
            &[("Modality", single("MR")), ("PatientID", single("P1"))]
        )
        .await,
        ["1.2.2.1.1"]
    );
    // Keys on a level below: some series or instance of the entity must match.
    assert_eq!(
        uids(index, Level::Study, &[("Modality", single("MR"))]).await,
        ["1.2.2", "1.4.1"]
    );
    assert_eq!(
        uids(index, Level::Patient, &[("Modality", single("SR"))]).await,
        ["P1"]
    );
    assert_eq!(
        uids(
            index,
            Level::Patient,
            &[("SOPClassUID", single(CT)), ("Modality", single("CT"))]
        )
        .await,
        ["P1", "P2"]
    );
}

async fn person_names(index: &dyn Index) {
    load(index).await;
    let mut padded = record(&[
        ("PatientID", "P9"),
        ("PatientName", "Øster^Ævar^^^"),
        ("StudyInstanceUID", "1.9"),
        ("SeriesInstanceUID", "1.9.1"),
        ("SOPInstanceUID", "1.9.1.1"),
    ]);
    padded.size_bytes = 1;
    index.upsert_instance(&padded).await.unwrap();
    let name = |m| [("PatientName", m)];
    // Exact, with diacritics.
    assert_eq!(
        uids(index, Level::Patient, &name(single("Müller^Zoë"))).await,
        ["P1"]
    );
    // Trailing empty components are insignificant, on either side.
    assert_eq!(
        uids(index, Level::Patient, &name(single("Müller^Zoë^^"))).await,
        ["P1"]
    );
    assert_eq!(
        uids(index, Level::Patient, &name(single("Øster^Ævar"))).await,
        ["P9"]
    );
    // Case-sensitive single value and wildcard matching.
    assert!(uids(index, Level::Patient, &name(single("müller^zoë")))
        .await
        .is_empty());
    assert!(uids(index, Level::Patient, &name(single("Muller^Zoe")))
        .await
        .is_empty());
    assert!(uids(index, Level::Patient, &name(wild("mül*")))
        .await
        .is_empty());
    // Fuzzy: case- and accent-insensitive prefix, of the name or one of its components.
    let fuzzy = |v: &str| name(Matcher::Fuzzy(v.to_string()));
    assert_eq!(uids(index, Level::Patient, &fuzzy("muller")).await, ["P1"]);
    assert_eq!(
        uids(index, Level::Patient, &fuzzy("MÜLLER^zoe")).await,
        ["P1"]
    );
    assert_eq!(uids(index, Level::Patient, &fuzzy("zoe")).await, ["P1"]);
    assert_eq!(
        uids(index, Level::Patient, &fuzzy("mul")).await,
        ["P1", "P3"]
    );
    assert_eq!(uids(index, Level::Patient, &fuzzy("oster")).await, ["P9"]);
    assert_eq!(uids(index, Level::Patient, &fuzzy("aevar")).await, ["P9"]);
    assert!(uids(index, Level::Patient, &fuzzy("uller"))
        .await
        .is_empty());
    // Referring physician (a study-level PN), with a word prefix.
    let referring = [("ReferringPhysicianName", Matcher::Fuzzy("vries".into()))];
    assert_eq!(uids(index, Level::Study, &referring).await.len(), 4);
}

/// Fuzzy name search reads `patient_name_word` (migration 0010): it follows a patient's new
/// name, keeps it when an instance comes without one, and forgets a removed patient's words
/// (a later patient that gets the same row id must not match them).
async fn fuzzy_names_follow_the_patient(index: &dyn Index) {
    load(index).await;
    let fuzzy = |v: &str| [("PatientName", Matcher::Fuzzy(v.to_string()))];
    let instance = |patient: &str, name: &str, study: &str| {
        record(&[
            ("PatientID", patient),
            ("PatientName", name),
            ("StudyInstanceUID", study),
            ("SeriesInstanceUID", &format!("{study}.1")),
            ("SOPInstanceUID", &format!("{study}.1.1")),
        ])
    };
    assert_eq!(uids(index, Level::Patient, &fuzzy("piet")).await, ["P2"]);
    // A newer instance renames P2: the old name's words go, the new ones match.
    index
        .upsert_instance(&instance("P2", "de Bakker-Smit^Truus", "1.3.2"))
        .await
        .unwrap();
    assert!(uids(index, Level::Patient, &fuzzy("piet")).await.is_empty());
    assert!(uids(index, Level::Patient, &fuzzy("jansen"))
        .await
        .is_empty());
    for word in ["truus", "bakker", "de bakker-smit^t", "DE BA"] {
        assert_eq!(
            uids(index, Level::Patient, &fuzzy(word)).await,
            ["P2"],
            "{word}"
        );
    }
    assert!(uids(index, Level::Patient, &fuzzy("smit")).await.is_empty());
    // An instance without a name keeps the name and its words.
    index
        .upsert_instance(&instance("P2", "", "1.3.3"))
        .await
        .unwrap();
    assert_eq!(uids(index, Level::Patient, &fuzzy("truus")).await, ["P2"]);
    assert_eq!(
        find(index, Level::Patient, &fuzzy("truus")).await[0][&tag("PatientName")],
        "de Bakker-Smit^Truus"
    );
    // A patient removed with its last instance takes its words along.
    index
        .upsert_instance(&instance("P8", "Oldname^Gone", "1.8"))
        .await
        .unwrap();
    assert_eq!(uids(index, Level::Patient, &fuzzy("gone")).await, ["P8"]);
    index.remove_instance("1.8.1.1").await.unwrap();
    index
        .upsert_instance(&instance("P9", "Visser^Anna", "1.9"))
        .await
        .unwrap();
    assert!(uids(index, Level::Patient, &fuzzy("gone")).await.is_empty());
    assert!(uids(index, Level::Patient, &fuzzy("oldname"))
        .await
        .is_empty());
    assert_eq!(
        uids(index, Level::Patient, &fuzzy("anna")).await,
        ["P3", "P9"]
    );
    // At study level too (the QIDO-RS study search), with wildcard characters literal.
    assert_eq!(
        uids(index, Level::Study, &fuzzy("truus")).await,
        ["1.3.1", "1.3.2", "1.3.3"]
    );
    assert!(uids(index, Level::Study, &fuzzy("tr%s")).await.is_empty());
}

async fn paging(index: &dyn Index) {
    load(index).await;
    let all = uids(index, Level::Image, &[]).await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let mut paged = Vec::new();
    for page in 0..4 {
        let q = Query {
            limit: Some(3),
            offset: page * 3,
            ..Query::new(Level::Image)
        };
        let rows = index.find(&q).await.unwrap();
        assert!(rows.len() <= 3);
        paged.extend(column(&rows, "SOPInstanceUID"));
    }
    assert_eq!(paged, all);
    let q = Query {
        offset: 6,
        ..Query::new(Level::Image)
    };
    assert_eq!(
        column(&index.find(&q).await.unwrap(), "SOPInstanceUID"),
        all[6..]
    );
    let q = Query {
        limit: Some(0),
        ..Query::new(Level::Image)
    };
    assert!(index.find(&q).await.unwrap().is_empty());
    // Paging a study query keeps the multi-valued attributes with their study.
    let q = Query {
        limit: Some(2),
        offset: 1,
        ..Query::new(Level::Study)
    };
    let rows = index.find(&q).await.unwrap();
    assert_eq!(column(&rows, "StudyInstanceUID"), ["1.2.2", "1.3.1"]);
    assert_eq!(rows[0][&computed::MODALITIES_IN_STUDY], "MR");
    assert_eq!(rows[1][&computed::MODALITIES_IN_STUDY], "CT");
}

async fn locate(index: &dyn Index) {
    load(index).await;
    let sops = |sel: Selection| async move {
        index
            .locate(&sel)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.sop_instance_uid)
            .collect::<Vec<_>>()
    };
    let study = Selection {
        study_uids: vec!["1.2.1".into()],
        ..Default::default()
    };
    // By series, then instance number (1, 2, 10; non-numeric last), not by UID.
    assert_eq!(
        sops(study).await,
        ["1.2.1.1.9", "1.2.1.1.5", "1.2.1.1.1", "1.2.1.2.1"]
    );
    let series = Selection {
        series_uids: vec!["1.2.1.2".into(), "1.4.1.1".into()],
        ..Default::default()
    };
    assert_eq!(sops(series).await, ["1.2.1.2.1", "1.4.1.1.1", "1.4.1.1.2"]);
    let inst = Selection {
        sop_instance_uids: vec!["1.4.1.1.2".into(), "1.2.2.1.1".into(), "7.7".into()],
        ..Default::default()
    };
    assert_eq!(sops(inst).await, ["1.2.2.1.1", "1.4.1.1.2"]);
    let patient = Selection {
        patient_ids: vec!["P1".into()],
        ..Default::default()
    };
    assert_eq!(sops(patient).await.len(), 5);
    let mismatch = Selection {
        patient_ids: vec!["P2".into()],
        study_uids: vec!["1.2.1".into()],
        ..Default::default()
    };
    assert!(sops(mismatch).await.is_empty());
    assert!(sops(Selection::default()).await.is_empty());

    let loc = index
        .locate(&Selection {
            sop_instance_uids: vec!["1.3.1.1.1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let expected = fixture().remove(5);
    assert_eq!(loc.len(), 1);
    let l = &loc[0];
    assert_eq!(l.patient_id, "P2");
    assert_eq!(l.study_instance_uid, "1.3.1");
    assert_eq!(l.series_instance_uid, "1.3.1.1");
    assert_eq!(l.sop_class_uid, CT);
    assert_eq!(l.transfer_syntax_uid, EXPLICIT_LE);
    assert_eq!(l.blob_key, expected.blob_key);
    assert_eq!(l.size_bytes, expected.size_bytes);
}

/// Pages of `locate` add up to the whole answer, in the same order; the distinct transfer
/// syntaxes of a selection are what WADO-RS decides a 406 on before streaming.
async fn locate_in_pages(index: &dyn Index) {
    load(index).await;
    let patient = Selection {
        patient_ids: vec!["P1".into()],
        ..Default::default()
    };
    let whole = index.locate(&patient).await.unwrap();
    assert_eq!(whole.len(), 5);
    for page_size in [1u32, 2, 5, 7] {
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let page = index
                .locate_page(&patient, offset, page_size)
                .await
                .unwrap();
            assert!(page.len() <= page_size as usize);
            let last = page.len() < page_size as usize;
            paged.extend(page);
            if last {
                break;
            }
            offset += page_size;
        }
        assert_eq!(paged, whole, "pages of {page_size}");
    }
    assert_eq!(
        index.transfer_syntaxes(&patient).await.unwrap(),
        [EXPLICIT_LE]
    );
    assert!(index
        .transfer_syntaxes(&Selection {
            study_uids: vec!["9.9.9".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

async fn remove_instance(index: &dyn Index) {
    load(index).await;
    // One of several: the parents stay.
    let key = index.remove_instance("1.2.1.1.5").await.unwrap();
    assert_eq!(key.as_deref(), Some("1.2.1/1.2.1.1/1.2.1.1.5.dcm"));
    assert_eq!(
        find(
            index,
            Level::Series,
            &[("SeriesInstanceUID", single("1.2.1.1"))]
        )
        .await[0][&computed::NUMBER_OF_SERIES_RELATED_INSTANCES],
        "2"
    );
    // The last instance of P2: its series, study and patient go too.
    assert!(index.remove_instance("1.3.1.1.1").await.unwrap().is_some());
    assert_eq!(uids(index, Level::Patient, &[]).await, ["P1", "P3"]);
    assert_eq!(
        uids(index, Level::Study, &[]).await,
        ["1.2.1", "1.2.2", "1.4.1"]
    );
    assert!(!uids(index, Level::Series, &[])
        .await
        .contains(&"1.3.1.1".to_string()));
    // The last instance of a series of P1: only that series goes.
    index.remove_instance("1.2.1.2.1").await.unwrap();
    let s = find(
        index,
        Level::Study,
        &[("StudyInstanceUID", single("1.2.1"))],
    )
    .await;
    assert_eq!(s[0][&computed::MODALITIES_IN_STUDY], "CT");
    assert_eq!(s[0][&computed::NUMBER_OF_STUDY_RELATED_SERIES], "1");
    // Unknown: nothing.
    assert_eq!(index.remove_instance("1.3.1.1.1").await.unwrap(), None);
    assert_eq!(find(index, Level::Image, &[]).await.len(), 5);
}

async fn cache_state_and_eviction(index: &dyn Index) {
    load(index).await;
    let study = |uid: &str| Selection {
        study_uids: vec![uid.into()],
        ..Default::default()
    };
    let series_total = index.count_instances(&study("1.2.1")).await.unwrap();
    assert_eq!(
        series_total,
        index.locate(&study("1.2.1")).await.unwrap().len() as u64
    );
    assert_eq!(index.count_instances(&study("9.9")).await.unwrap(), 0);
    assert_eq!(index.cached_study("1.2.1").await.unwrap(), None);
    for (uid, access) in [("1.2.1", 20), ("1.2.2", 10)] {
        let state = CachedStudy {
            study_instance_uid: uid.into(),
            pacs_instances: 7,
            complete: false,
            checked_at: 5,
            last_access: access,
        };
        index.put_cached_study(&state).await.unwrap();
    }
    let mut state = index.cached_study("1.2.1").await.unwrap().unwrap();
    assert_eq!(
        (state.pacs_instances, state.complete, state.last_access),
        (7, false, 20)
    );
    state.complete = true;
    state.pacs_instances = 3;
    index.put_cached_study(&state).await.unwrap();
    assert_eq!(index.cached_study("1.2.1").await.unwrap().unwrap(), state);
    // Least recently used first, with their bytes; uncached studies (1.4.1) are not listed.
    let lru = index.cache_lru().await.unwrap();
    assert_eq!(
        lru.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
        ["1.2.2", "1.2.1"]
    );
    let bytes: u64 = index
        .locate(&study("1.2.1"))
        .await
        .unwrap()
        .iter()
        .map(|l| l.size_bytes)
        .sum();
    assert!(bytes > 0);
    assert_eq!(lru[1].1, bytes);
    // Evicting a study removes its rows and cache state, and returns its blob keys.
    let keys = index.remove_study("1.2.1").await.unwrap();
    assert_eq!(keys.len() as u64, series_total);
    assert_eq!(index.count_instances(&study("1.2.1")).await.unwrap(), 0);
    assert_eq!(index.cached_study("1.2.1").await.unwrap(), None);
    assert!(!uids(index, Level::Study, &[])
        .await
        .contains(&"1.2.1".to_string()));
    // P1 keeps its other study.
    assert!(uids(index, Level::Patient, &[])
        .await
        .contains(&"P1".to_string()));
}

async fn forward_queue(index: &dyn Index) {
    let items = [
        ("1.2.1".to_string(), "1.2.1.1.1".to_string()),
        ("1.2.1".into(), "1.2.1.1.2".into()),
    ];
    index.enqueue_forward(&items, "GTK-A", 100).await.unwrap();
    assert!(index.forward_jobs(Some(99), 10).await.unwrap().is_empty());
    let due = index.forward_jobs(Some(100), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].sop_instance_uid, "1.2.1.1.1");
    assert_eq!(
        (
            due[0].state.as_str(),
            due[0].attempts,
            due[0].sender.as_str()
        ),
        ("queued", 0, "GTK-A")
    );
    index
        .update_forward(due[0].id, "done", 100, "")
        .await
        .unwrap();
    index
        .update_forward(due[1].id, "queued", 160, "association refused")
        .await
        .unwrap();
    assert!(index.forward_jobs(Some(150), 10).await.unwrap().is_empty());
    let all = index.forward_jobs(None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].state.as_str(),
            all[0].attempts,
            all[0].last_error.as_str()
        ),
        ("queued", 1, "association refused")
    );
    assert_eq!(all[1].state, "done");
    assert_eq!(index.forward_jobs(Some(160), 10).await.unwrap().len(), 1);
}

async fn audit_round_trip(index: &dyn Index) {
    assert!(index.audit_events(10).await.unwrap().is_empty());
    let events: Vec<AuditEvent> = (0..3)
        .map(|i| AuditEvent {
            time: format!("2025-01-0{}T10:00:00Z", i + 1),
            operation: ["C-FIND", "C-MOVE", "C-STORE"][i].to_string(),
            actor: "MODALITY1".into(),
            source: "10.0.0.5:40000".into(),
            patient_ids: "P1\\P2".into(),
            study_uids: if i == 1 {
                "1.2.1".into()
            } else {
                String::new()
            },
            outcome: if i == 2 {
                "refused".into()
            } else {
                "success".into()
            },
            detail: format!("event {i}: Zoë's \"detail\""),
        })
        .collect();
    for e in &events {
        index.record_audit(e).await.unwrap();
    }
    assert_eq!(index.audit_events(10).await.unwrap(), events);
    assert_eq!(index.audit_events(2).await.unwrap(), events[1..]);
}

async fn concurrent_upserts(index: &dyn Index) {
    let tasks = (0..40).map(|i| async move {
        let r = record(&[
            ("PatientID", "PC"),
            ("PatientName", "Concurrent^Carla"),
            ("StudyInstanceUID", "1.8"),
            ("SeriesInstanceUID", &format!("1.8.{}", i % 4)),
            ("SOPInstanceUID", &format!("1.8.{}.{i}", i % 4)),
            ("Modality", "CT"),
        ]);
        index.upsert_instance(&r).await.unwrap();
    });
    futures::future::join_all(tasks).await;
    let patients = find(index, Level::Patient, &[]).await;
    assert_eq!(patients.len(), 1);
    assert_eq!(
        patients[0][&computed::NUMBER_OF_PATIENT_RELATED_SERIES],
        "4"
    );
    assert_eq!(
        patients[0][&computed::NUMBER_OF_PATIENT_RELATED_INSTANCES],
        "40"
    );
}

/// A study's computed values as its rows say: (series, instances, modalities, SOP classes),
/// from the SERIES and IMAGE levels.
async fn study_values_from_rows(index: &dyn Index) -> Vec<(String, [String; 4])> {
    use std::collections::{BTreeMap, BTreeSet};
    #[derive(Default)]
    struct Rows {
        series: BTreeSet<String>,
        instances: usize,
        modalities: BTreeSet<String>,
        classes: BTreeSet<String>,
    }
    let mut studies: BTreeMap<String, Rows> = BTreeMap::new();
    for s in find(index, Level::Series, &[]).await {
        let e = studies
            .entry(s[&tag("StudyInstanceUID")].clone())
            .or_default();
        e.series.insert(s[&tag("SeriesInstanceUID")].clone());
        e.modalities.insert(s[&tag("Modality")].clone());
    }
    for i in find(index, Level::Image, &[]).await {
        let e = studies
            .entry(i[&tag("StudyInstanceUID")].clone())
            .or_default();
        e.instances += 1;
        e.classes.insert(i[&tag("SOPClassUID")].clone());
    }
    let join = |set: BTreeSet<String>| {
        set.into_iter()
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join("\\")
    };
    studies
        .into_iter()
        .map(|(uid, rows)| {
            let values = [
                rows.series.len().to_string(),
                rows.instances.to_string(),
                join(rows.modalities),
                join(rows.classes),
            ];
            (uid, values)
        })
        .collect()
}

/// The computed values the STUDY level answers, unpaged and a page at a time (both query
/// shapes of `find`).
async fn study_values_found(index: &dyn Index) -> Vec<(String, [String; 4])> {
    let values = |m: &Match| {
        [
            computed::NUMBER_OF_STUDY_RELATED_SERIES,
            computed::NUMBER_OF_STUDY_RELATED_INSTANCES,
            computed::MODALITIES_IN_STUDY,
            computed::SOP_CLASSES_IN_STUDY,
        ]
        .map(|t| m[&t].clone())
    };
    let all: Vec<_> = find(index, Level::Study, &[])
        .await
        .iter()
        .map(|m| (m[&tag("StudyInstanceUID")].clone(), values(m)))
        .collect();
    let mut paged = Vec::new();
    for page in 0.. {
        let q = Query {
            limit: Some(2),
            offset: page * 2,
            ..Query::new(Level::Study)
        };
        let rows = index.find(&q).await.unwrap();
        if rows.is_empty() {
            break;
        }
        paged.extend(
            rows.iter()
                .map(|m| (m[&tag("StudyInstanceUID")].clone(), values(m))),
        );
    }
    assert_eq!(paged, all, "paged and unpaged agree");
    all
}

/// Assert that the kept values equal the rows' and return those of one study.
async fn study_values(index: &dyn Index, uid: &str) -> Option<[String; 4]> {
    let found = study_values_found(index).await;
    assert_eq!(found, study_values_from_rows(index).await);
    found.into_iter().find(|(u, _)| u == uid).map(|(_, v)| v)
}

fn values(series: usize, instances: usize, modalities: &str, classes: &str) -> Option<[String; 4]> {
    Some([
        series.to_string(),
        instances.to_string(),
        modalities.to_string(),
        classes.to_string(),
    ])
}

/// The study values kept on the study row (migration 0013) follow every change of its
/// instances: stores, re-sends in place, re-sends that change class, move the instance or
/// move a whole series, batches, removals and deletes of instances, series and studies.
async fn study_values_follow_the_instances(index: &dyn Index) {
    load(index).await;
    let ct_sr = format!("{CT}\\{SR}");
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(2, 4, "CT\\SR", &ct_sr)
    );
    assert_eq!(study_values(index, "1.4.1").await, values(1, 2, "MR", MR));

    // Re-sent unchanged: nothing changes.
    let records = fixture();
    index.upsert_instance(&records[0]).await.unwrap();
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(2, 4, "CT\\SR", &ct_sr)
    );

    // Re-sent with another SOP class: the old class goes, the new one comes.
    let mut r = records[3].clone(); // the only SR of 1.2.1
    r.values.insert(tag("SOPClassUID"), MR.into());
    index.upsert_instance(&r).await.unwrap();
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(2, 4, "CT\\SR", &format!("{CT}\\{MR}"))
    );
    index.upsert_instance(&records[3]).await.unwrap();

    // Re-sent into a new series of the same study with another modality.
    let mut r = records[1].clone();
    r.values.insert(tag("SeriesInstanceUID"), "1.2.1.3".into());
    r.values.insert(tag("Modality"), "OT".into());
    index.upsert_instance(&r).await.unwrap();
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(3, 4, "CT\\OT\\SR", &ct_sr)
    );

    // Re-sent into a series of another study: one leaves, one gains.
    let mut r = records[2].clone();
    r.values.insert(tag("StudyInstanceUID"), "1.4.1".into());
    r.values.insert(tag("SeriesInstanceUID"), "1.4.1.1".into());
    r.values.insert(tag("PatientID"), "P3".into());
    r.values.insert(tag("Modality"), "MR".into());
    index.upsert_instance(&r).await.unwrap();
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(3, 3, "CT\\OT\\SR", &ct_sr)
    );
    assert_eq!(
        study_values(index, "1.4.1").await,
        values(1, 3, "MR", &format!("{CT}\\{MR}"))
    );

    // An instance naming an existing series under another study moves the whole series
    // (with its other instances) there.
    let mut r = records[4].clone(); // 1.2.2.1 (MR), the only series of 1.2.2
    r.values.insert(tag("StudyInstanceUID"), "1.3.1".into());
    r.values.insert(tag("PatientID"), "P2".into());
    r.values.insert(tag("PatientName"), "Jansen^Piet".into());
    index.upsert_instance(&r).await.unwrap();
    assert_eq!(study_values(index, "1.2.2").await, None, "emptied, pruned");
    assert_eq!(
        study_values(index, "1.3.1").await,
        values(2, 2, "CT\\MR", &format!("{CT}\\{MR}"))
    );

    // A batch of a new series in an existing study, then a batch re-sending it.
    let batch: Vec<InstanceRecord> = (0..5)
        .map(|n| {
            let mut r = records[6].clone();
            r.values.insert(tag("SeriesInstanceUID"), "1.4.1.7".into());
            r.values
                .insert(tag("SOPInstanceUID"), format!("1.4.1.7.{n}"));
            r.values.insert(tag("Modality"), "SR".into());
            r.values.insert(tag("SOPClassUID"), SR.into());
            r
        })
        .collect();
    index.upsert_instances(&batch).await.unwrap();
    let all_three = format!("{CT}\\{MR}\\{SR}");
    assert_eq!(
        study_values(index, "1.4.1").await,
        values(2, 8, "MR\\SR", &all_three)
    );
    index.upsert_instances(&batch).await.unwrap();
    assert_eq!(
        study_values(index, "1.4.1").await,
        values(2, 8, "MR\\SR", &all_three)
    );

    // Removals: one instance; then a series by delete; then the last of a class.
    index.remove_instance("1.4.1.7.0").await.unwrap();
    assert_eq!(
        study_values(index, "1.4.1").await,
        values(2, 7, "MR\\SR", &all_three)
    );
    let series = Selection {
        series_uids: vec!["1.4.1.7".into()],
        ..Default::default()
    };
    assert_eq!(index.delete_instances(&series, 1).await.unwrap().len(), 4);
    assert_eq!(
        study_values(index, "1.4.1").await,
        values(1, 3, "MR", &format!("{CT}\\{MR}"))
    );
    let one = Selection {
        sop_instance_uids: vec![records[2].sop_instance_uid().to_string()],
        ..Default::default()
    };
    assert_eq!(index.delete_instances(&one, 1).await.unwrap().len(), 1);
    assert_eq!(study_values(index, "1.4.1").await, values(1, 2, "MR", MR));

    // A whole study deleted, and one evicted: gone, the others as they were.
    let study = Selection {
        study_uids: vec!["1.3.1".into()],
        ..Default::default()
    };
    assert_eq!(index.delete_instances(&study, 1).await.unwrap().len(), 2);
    assert_eq!(study_values(index, "1.3.1").await, None);
    index.remove_study("1.4.1").await.unwrap();
    assert_eq!(study_values(index, "1.4.1").await, None);
    assert_eq!(
        study_values(index, "1.2.1").await,
        values(3, 3, "CT\\OT\\SR", &ct_sr)
    );

    // Concurrent stores into one study, one instance per transaction.
    let tasks = (0..20).map(|i| async move {
        let r = record(&[
            ("PatientID", "PC"),
            ("StudyInstanceUID", "1.8"),
            ("SeriesInstanceUID", &format!("1.8.{}", i % 3)),
            ("SOPInstanceUID", &format!("1.8.{}.{i}", i % 3)),
            ("Modality", ["CT", "MR", "CT"][i % 3]),
            ("SOPClassUID", [CT, MR, SR][i % 3]),
        ]);
        index.upsert_instance(&r).await.unwrap();
    });
    futures::future::join_all(tasks).await;
    assert_eq!(
        study_values(index, "1.8").await,
        values(3, 20, "CT\\MR", &all_three)
    );
    let p1 = &find(index, Level::Patient, &[("PatientID", single("P1"))]).await[0];
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_STUDIES], "1");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_SERIES], "3");
    assert_eq!(p1[&computed::NUMBER_OF_PATIENT_RELATED_INSTANCES], "3");
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A fresh database on the test server with the index opened in it.
struct PgDb {
    db: pg::FreshDatabase,
    index: PostgresIndex,
}

impl PgDb {
    async fn create() -> PgDb {
        let db = pg::FreshDatabase::create().await;
        let index = PostgresIndex::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("opening the index in {}: {e}", db.name));
        PgDb { db, index }
    }

    async fn drop_db(self) {
        self.index.close().await;
        self.db.drop_db().await;
    }
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("index.db").display());
                    let index = super::SqliteIndex::open(&url).await.unwrap();
                    super::$name(&index).await;
                    index.close().await;
                }
            )*
        }

        mod postgres {
            use futures::FutureExt;

            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::PgDb::create().await;
                    let result = super::AssertUnwindSafe(super::$name(&db.index)).catch_unwind().await;
                    db.drop_db().await;
                    if let Err(panic) = result {
                        std::panic::resume_unwind(panic);
                    }
                }
            )*
        }
    };
}

backend_tests!(
    find_at_each_level,
    reupsert_replaces,
    missing_keys,
    batch_upserts,
    superseding_batches,
    matching,
    person_names,
    fuzzy_names_follow_the_patient,
    paging,
    locate,
    locate_in_pages,
    remove_instance,
    audit_round_trip,
    concurrent_upserts,
    cache_state_and_eviction,
    forward_queue,
    study_values_follow_the_instances,
);

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_index_reopens_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let index = SqliteIndex::open(&url).await.unwrap();
    load(&index).await;
    index.close().await;
    let index = SqliteIndex::open(&url).await.unwrap();
    assert_eq!(find(&index, Level::Image, &[]).await.len(), 8);
    index.close().await;
}

/// Statements that take an index back to before migration 0013 (its study values), rows
/// kept: the migration then runs again at the next open, as on an index that had data.
const UNDO_0013: &[&str] = &[
    "DROP INDEX study_patient_uid_idx",
    "DROP INDEX study_date_uid_idx",
    "CREATE INDEX study_patient_idx ON study (patient_pk)",
    "CREATE INDEX study_date_idx ON study (study_date)",
    "ALTER TABLE study DROP COLUMN num_series",
    "ALTER TABLE study DROP COLUMN num_instances",
    "ALTER TABLE study DROP COLUMN modalities",
    "ALTER TABLE study DROP COLUMN sop_classes",
    "DELETE FROM _sqlx_migrations WHERE version = 13",
];
/// PostgreSQL's migration 0013 has one index more.
const UNDO_0013_POSTGRES: &str = "DROP INDEX study_uid_id_idx";

/// Rows from before migration 0013, of studies with several series, SOP classes and an
/// empty modality: what the migration fills in.
async fn load_for_migration(index: &dyn Index) {
    load(index).await;
    let mut r = fixture().remove(0);
    r.values.insert(tag("SeriesInstanceUID"), "1.2.1.9".into());
    r.values.insert(tag("SOPInstanceUID"), "1.2.1.9.1".into());
    r.values.insert(tag("Modality"), String::new());
    r.values.insert(tag("SOPClassUID"), String::new());
    index.upsert_instance(&r).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_migration_fills_study_values() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let index = SqliteIndex::open(&url).await.unwrap();
    load_for_migration(&index).await;
    let before = study_values_from_rows(&index).await;
    for statement in UNDO_0013 {
        sqlx::query(statement).execute(index.pool()).await.unwrap();
    }
    index.close().await;
    let index = SqliteIndex::open(&url).await.unwrap();
    assert_eq!(study_values_found(&index).await, before);
    assert_eq!(
        study_values(&index, "1.2.1").await,
        values(3, 5, "CT\\SR", &format!("{CT}\\{SR}"))
    );
    index.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_migration_fills_study_values() {
    use futures::FutureExt;
    let db = PgDb::create().await;
    let result = AssertUnwindSafe(async {
        load_for_migration(&db.index).await;
        let before = study_values_from_rows(&db.index).await;
        for statement in std::iter::once(&UNDO_0013_POSTGRES).chain(UNDO_0013) {
            sqlx::query(statement)
                .execute(db.index.pool())
                .await
                .unwrap();
        }
        let index = PostgresIndex::open(&db.db.url).await.unwrap();
        assert_eq!(study_values_found(&index).await, before);
        assert_eq!(
            study_values(&index, "1.2.1").await,
            values(3, 5, "CT\\SR", &format!("{CT}\\{SR}"))
        );
        index.close().await;
    })
    .catch_unwind()
    .await;
    db.drop_db().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn database_name_replacement() {
    assert_eq!(
        pg::with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        pg::with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        pg::with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
