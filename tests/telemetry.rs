//! Traces of the real binary (issue 16 item 3): `beeldbrug serve` in gateway mode in front of
//! DCMTK dcmqrscp (a real PACS, retrieving by C-GET or C-MOVE), exporting by OTLP/HTTP to a
//! receiver that decodes the protobuf with the official `opentelemetry-proto` messages
//! (tests/otlp/receiver.py), and writing its log as JSON lines (`[log] format = "json"`).
//!
//! - A WADO-RS retrieve that carries a caller's W3C `traceparent` is one trace with the
//!   caller's trace id: the request's server span (child of the caller's span), the PACS's
//!   C-GET client span under it and one C-STORE sub-operation span per instance under that;
//!   the audit record of the retrieve names the same trace id. The same with C-MOVE (dcmqrscp
//!   without C-GET, sending to beeldbrug's Storage SCP).
//! - A QIDO-RS search without `traceparent` starts a trace of its own, which holds the PACS's
//!   C-FIND; its audit record names that trace.
//! - A C-FIND on an association (DCMTK findscu) is a trace of its own too, named in its audit
//!   record.
//! - The C-STOREs of one association (DCMTK storescu, three files) are one trace: a root span
//!   with one child span per instance, named in the stores' one audit record.
//! - Every line of the log is a JSON object.

mod common;
#[path = "common/otlp.rs"]
mod otlp;

use beeldbrug::store::index::AuditRecord;
use common::dcmqrscp::Dcmqrscp;
use common::gateway_mode::{pacs_toml, AS_STORED};
use otlp::{audit_records, descends, receiver, serve, spans, trace, Killed, Span};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AE: &str = "DCMQRSCP";

/// dcmqrscp holding generated studies, the OTLP receiver, and `beeldbrug serve` in front of
/// the PACS retrieving by `retrieve` (`c-get`; `c-move` with dcmqrscp's C-GET disabled and
/// beeldbrug as its C-MOVE destination), JSON logs, spans to the receiver.
struct Traced {
    dir: tempfile::TempDir,
    files: Vec<beeldbrug::testdata::GeneratedFile>,
    _pacs: Dcmqrscp,
    _receiver: Killed,
    gateway: Killed,
    dimse_port: u16,
    http_port: u16,
}

impl Traced {
    async fn start(retrieve: &str) -> Traced {
        let dir = tempfile::tempdir().unwrap();
        let files = common::generate(&dir.path().join("src"), false);
        let our_port = common::free_port();
        let pacs = match retrieve {
            "c-move" => {
                Dcmqrscp::start(
                    dir.path(),
                    AE,
                    &[("BEELDBRUG", our_port)],
                    &["--disable-get"],
                )
                .await
            }
            _ => Dcmqrscp::start(dir.path(), AE, &[], &[]).await,
        };
        let loaded = files.clone();
        let pacs = tokio::task::spawn_blocking(move || {
            pacs.load(&loaded);
            pacs
        })
        .await
        .unwrap();
        let (receiver, otlp_port) = receiver(&dir.path().join("spans.jsonl"));
        let config = dir.path().join("beeldbrug.toml");
        std::fs::write(
            &config,
            format!(
                "[dimse]\nlisten = \"127.0.0.1:{our_port}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
                 [storage]\ndata_dir = \"{}\"\n[log]\nformat = \"json\"\n\
                 [telemetry]\notlp_endpoint = \"http://127.0.0.1:{otlp_port}\"\n\
                 service_name = \"beeldbrug-test\"\n{}",
                dir.path().join("data").display(),
                pacs_toml(AE, pacs.port, retrieve, "")
            ),
        )
        .unwrap();
        let (gateway, dimse_port, http_port) = serve(&config, &dir.path().join("stderr.log"));
        Traced {
            dir,
            files,
            _pacs: pacs,
            _receiver: receiver,
            gateway,
            dimse_port,
            http_port,
        }
    }

    fn spans(&self) -> Vec<Span> {
        spans(&self.dir.path().join("spans.jsonl"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// WADO-RS of the first study with a caller's `traceparent` (`caller_trace`,
    /// `caller_span`); how many instances it holds.
    async fn retrieve_traced(&self, caller_trace: &str, caller_span: &str) -> usize {
        let study = &self.files[0].study_uid;
        let in_study = self.files.iter().filter(|f| &f.study_uid == study).count();
        let traceparent = format!("00-{caller_trace}-{caller_span}-01");
        let r = common::http::request(
            self.http_port,
            "GET",
            &format!("/dicomweb/studies/{study}"),
            &[("Accept", AS_STORED), ("traceparent", &traceparent)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            common::http::multipart_parts(&r).len(),
            in_study,
            "the study through the gateway"
        );
        in_study
    }

    /// Wait until the exported spans satisfy `done` (the batch exporter sends every few
    /// seconds, without a stop).
    async fn wait_for(&self, done: impl Fn(&[Span]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.spans()) {
            assert!(
                Instant::now() < deadline,
                "the spans were not exported: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM and wait: whatever is still queued is exported before the process ends.
    async fn stop(&mut self) {
        otlp::stop(&mut self.gateway).await;
    }
}

/// The checks of a traced WADO-RS retrieve: one trace, the caller's, with the request's
/// server span (child of the caller's span), one `operation` client span to the PACS under
/// it and `in_study` sub-operation spans under that; the audit record names the trace.
async fn assert_one_retrieve_trace(
    t: &Traced,
    operation: &str,
    caller_trace: &str,
    caller_span: &str,
    in_study: usize,
) {
    let all = t.spans();
    assert!(
        all.iter().all(|s| s.service == "beeldbrug-test"),
        "service.name from [telemetry]"
    );
    let wado_trace = trace(&all, caller_trace);
    let server = wado_trace
        .values()
        .find(|s| s.name == "GET /dicomweb/studies/{study}")
        .unwrap_or_else(|| panic!("no WADO-RS span in the caller's trace: {all:#?}"));
    assert_eq!(server.kind, "SPAN_KIND_SERVER");
    assert_eq!(server.parent, caller_span, "child of the caller's span");
    let calls: Vec<&Span> = wado_trace
        .values()
        .filter(|s| s.name == operation)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "one {operation} to the PACS: {wado_trace:#?}"
    );
    let call = calls[0];
    assert_eq!(call.kind, "SPAN_KIND_CLIENT");
    assert_ne!(call.status, "STATUS_CODE_ERROR");
    assert!(
        descends(&wado_trace, call, &server.span_id),
        "the {operation} belongs to the WADO-RS request: {wado_trace:#?}"
    );
    let sub_operations = wado_trace
        .values()
        .filter(|s| s.name == "C-STORE" && s.parent == call.span_id)
        .count();
    assert_eq!(
        sub_operations, in_study,
        "one sub-operation span per instance under the {operation}"
    );
    let records = audit_records(&t.data_dir()).await;
    let retrieves: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.operation == "WADO-RS")
        .collect();
    assert_eq!(retrieves.len(), 1, "{records:#?}");
    assert_eq!(retrieves[0].trace_id, caller_trace);
}

fn has_span(all: &[Span], trace_id: &str, name: &str) -> bool {
    all.iter().any(|s| s.trace_id == trace_id && s.name == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_per_transfer_across_protocols_and_in_the_audit_record() {
    let mut t = Traced::start("c-get").await;
    let (files, http_port) = (t.files.clone(), t.http_port);
    let study = &files[0].study_uid;
    // The caller's trace: its trace id and the id of its (client) span.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let in_study = t.retrieve_traced(caller_trace, caller_span).await;
    // A search without traceparent: a trace of the gateway's own.
    let patient = &files[0].patient_id;
    let r = common::http::get(
        http_port,
        &format!("/dicomweb/studies?PatientID={patient}"),
        "application/dicom+json",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A C-FIND on an association (answered from the cache): a trace per operation.
    let dimse_port = t.dimse_port.to_string();
    let study_key = format!("StudyInstanceUID={study}");
    let out = tokio::task::block_in_place(|| {
        common::dcmtk(
            "findscu",
            &[
                "-S",
                "-aet",
                "FINDSCU",
                "-aec",
                "BEELDBRUG",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &study_key,
                "127.0.0.1",
                &dimse_port,
            ],
        )
    });
    assert!(
        out.status.success(),
        "findscu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three C-STOREs on one association (DCMTK storescu): one trace, one span per instance.
    let stored: Vec<String> = files[..3]
        .iter()
        .map(|f| f.path.to_str().unwrap().to_string())
        .collect();
    let mut args = vec![
        "-aet",
        "STORESCU",
        "-aec",
        "BEELDBRUG",
        "127.0.0.1",
        &dimse_port,
    ];
    args.extend(stored.iter().map(String::as_str));
    let out = tokio::task::block_in_place(|| common::dcmtk("storescu", &args));
    assert!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    t.wait_for(|all| {
        has_span(all, caller_trace, "GET /dicomweb/studies/{study}")
            && all
                .iter()
                .any(|s| s.name == "GET /dicomweb/studies" && s.parent.is_empty())
            && all
                .iter()
                .any(|s| s.name == "C-FIND" && s.parent.is_empty())
            && all
                .iter()
                .any(|s| s.name == "C-STORE" && s.parent.is_empty())
    })
    .await;
    t.stop().await;
    assert_one_retrieve_trace(&t, "C-GET", caller_trace, caller_span, in_study).await;
    let all = t.spans();

    // The QIDO-RS search: a trace of its own, holding the C-FIND.
    let qido = all
        .iter()
        .find(|s| s.name == "GET /dicomweb/studies" && s.parent.is_empty())
        .unwrap_or_else(|| panic!("no QIDO-RS root span: {all:#?}"));
    assert_ne!(qido.trace_id, caller_trace);
    let qido_trace = trace(&all, &qido.trace_id);
    assert!(
        qido_trace
            .values()
            .any(|s| s.name == "C-FIND" && descends(&qido_trace, s, &qido.span_id)),
        "the C-FIND belongs to the QIDO-RS request: {qido_trace:#?}"
    );

    // The C-FIND on the association: a root span of its own (a server span).
    let find = all
        .iter()
        .find(|s| s.name == "C-FIND" && s.parent.is_empty())
        .unwrap_or_else(|| panic!("no DIMSE C-FIND root span: {all:#?}"));
    assert_eq!(find.kind, "SPAN_KIND_SERVER");

    // The association's C-STOREs: one root span, the three instances as its children.
    let stores = all
        .iter()
        .find(|s| s.name == "C-STORE" && s.parent.is_empty())
        .unwrap_or_else(|| panic!("no DIMSE C-STORE root span: {all:#?}"));
    let stores_trace = trace(&all, &stores.trace_id);
    let instances = stores_trace
        .values()
        .filter(|s| s.name == "C-STORE" && s.parent == stores.span_id)
        .count();
    assert_eq!(instances, 3, "one span per instance: {stores_trace:#?}");

    // The audit records name the traces.
    let records = audit_records(&t.data_dir()).await;
    let of = |operation: &str| -> Vec<&AuditRecord> {
        records
            .iter()
            .filter(|r| r.operation == operation)
            .collect()
    };
    let searches = of("QIDO-RS");
    assert_eq!(searches.len(), 1, "{records:#?}");
    assert_eq!(searches[0].trace_id, qido.trace_id);
    let finds = of("C-FIND");
    assert_eq!(finds.len(), 1, "{records:#?}");
    assert_eq!(finds[0].trace_id, find.trace_id);
    let store_records = of("C-STORE");
    assert_eq!(store_records.len(), 1, "{records:#?}");
    assert_eq!(store_records[0].trace_id, stores.trace_id);

    // The log: JSON lines only, the request lines among them.
    let log = std::fs::read_to_string(t.dir.path().join("stderr.log")).unwrap();
    let lines: Vec<Json> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "http request" && l["route"] == "/dicomweb/studies/{study}"),
        "{log}"
    );
}

/// The same through C-MOVE: dcmqrscp offers no C-GET and sends to beeldbrug's Storage SCP.
#[tokio::test(flavor = "multi_thread")]
async fn a_c_move_retrieve_is_one_trace_with_its_sub_operations() {
    let mut t = Traced::start("c-move").await;
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let in_study = t.retrieve_traced(caller_trace, caller_span).await;
    t.wait_for(|all| has_span(all, caller_trace, "GET /dicomweb/studies/{study}"))
        .await;
    t.stop().await;
    assert_one_retrieve_trace(&t, "C-MOVE", caller_trace, caller_span, in_study).await;
}
