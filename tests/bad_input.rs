//! Bad input on the DIMSE port, against a real gateway over TCP.
//!
//! After each bad input three things must hold:
//! 1. the peer gets a clean answer: A-ASSOCIATE-RJ (PDU type 0x03), A-ABORT (0x07), a
//!    failure DIMSE status, or a closed connection, and never a hang (every wait is bounded);
//! 2. nothing is left in `<data_dir>/tmp`, and nothing half-written in `<data_dir>/blobs`;
//! 3. the gateway still serves: a following C-ECHO returns status 0.
//!
//! Each case is a function of a running gateway: its own test runs it on a gateway of its
//! own, and `one_gateway_survives_every_case` runs them all against one gateway process.

mod common;

use beeldbrug::dimse::command::{CommandField, CommandSet};
use beeldbrug::dimse::negotiate::ProposedContext;
use beeldbrug::dimse::scu::{self, ScuOptions};
use beeldbrug::dimse::{sop, Association, AssociationError, Event};
use common::{dcmtk, generate, Gateway};
use dicom_ul::pdu::{
    read_pdu, write_pdu, AssociationRQ, Pdu, PresentationContextProposed,
    PresentationContextResultReason, UserVariableItem,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const UNKNOWN_SOP_CLASS: &str = "1.2.3.4.5.6";
/// Upper bound for any single wait on the gateway.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// How the gateway ended a connection we fed bad input.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A-ASSOCIATE-RJ: its result, source and reason bytes (PS3.8 9.3.4).
    Rejected { result: u8, source: u8, reason: u8 },
    /// A-ABORT.
    Aborted,
    /// The connection closed (or was reset) without a PDU.
    Closed,
}

/// A deterministic byte generator (xorshift64*), so failures reproduce.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

async fn connect_raw(port: u16) -> TcpStream {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// An A-ASSOCIATE-RQ encoded by dicom-ul, proposing `contexts` as (id, abstract syntax)
/// in Explicit and Implicit VR Little Endian.
fn associate_rq(calling_ae: &str, contexts: &[(u8, &str)]) -> Vec<u8> {
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.to_string(),
        called_ae_title: "BEELDBRUG".to_string(),
        application_context_name: "1.2.840.10008.3.1.1.1".to_string(),
        presentation_contexts: contexts
            .iter()
            .map(|(id, abs)| PresentationContextProposed {
                id: *id,
                abstract_syntax: abs.to_string(),
                transfer_syntaxes: vec![
                    sop::EXPLICIT_VR_LE.to_string(),
                    sop::IMPLICIT_VR_LE.to_string(),
                ],
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.9.7433.1".to_string()),
        ],
    };
    let mut buf = Vec::new();
    write_pdu(&mut buf, &Pdu::AssociationRQ(rq)).expect("encode A-ASSOCIATE-RQ");
    buf
}

/// One P-DATA-TF PDU with one PDV.
fn pdata(context_id: u8, is_command: bool, is_last: bool, data: &[u8]) -> Vec<u8> {
    let item_len = data.len() as u32 + 2;
    let mut out = vec![0x04, 0x00];
    out.extend_from_slice(&(item_len + 4).to_be_bytes());
    out.extend_from_slice(&item_len.to_be_bytes());
    out.push(context_id);
    out.push(u8::from(is_command) | (u8::from(is_last) << 1));
    out.extend_from_slice(data);
    out
}

/// Read one raw PDU (type, body); `None` when the connection ends first.
async fn read_raw_pdu(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 6];
    match tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("gateway did not answer in time (hang)")
    {
        Ok(_) => {}
        Err(_) => return None, // EOF or reset
    }
    let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    assert!(len <= 1 << 20, "gateway sent a PDU announcing {len} bytes");
    let mut body = vec![0u8; len as usize];
    match tokio::time::timeout(WAIT, stream.read_exact(&mut body))
        .await
        .expect("gateway did not finish its PDU in time")
    {
        Ok(_) => Some((header[0], body)),
        Err(_) => None,
    }
}

/// Wait for the gateway to end the connection: an A-ASSOCIATE-RJ, an A-ABORT or a close.
async fn expect_clean_end(stream: &mut TcpStream) -> End {
    match read_raw_pdu(stream).await {
        None => End::Closed,
        Some((0x03, body)) => {
            assert_eq!(body.len(), 4, "A-ASSOCIATE-RJ body");
            End::Rejected {
                result: body[1],
                source: body[2],
                reason: body[3],
            }
        }
        Some((0x07, _)) => End::Aborted,
        Some((kind, body)) => panic!(
            "expected A-ASSOCIATE-RJ, A-ABORT or close; got PDU type 0x{kind:02X} ({} bytes)",
            body.len()
        ),
    }
}

/// Associate over raw TCP and return the stream once the A-ASSOCIATE-AC accepted context 1.
async fn associate_raw(port: u16, abstract_syntax: &str) -> TcpStream {
    let mut stream = connect_raw(port).await;
    stream
        .write_all(&associate_rq("TEST", &[(1, abstract_syntax)]))
        .await
        .unwrap();
    let (kind, body) = read_raw_pdu(&mut stream)
        .await
        .expect("an answer to A-ASSOCIATE-RQ");
    assert_eq!(kind, 0x02, "expected A-ASSOCIATE-AC");
    let mut whole = vec![kind, 0];
    whole.extend_from_slice(&(body.len() as u32).to_be_bytes());
    whole.extend_from_slice(&body);
    match read_pdu(&whole[..], 1 << 20, true) {
        Ok(Some(Pdu::AssociationAC(ac))) => {
            let pc = ac
                .presentation_contexts
                .iter()
                .find(|r| r.id == 1)
                .expect("result for context 1");
            assert_eq!(pc.reason, PresentationContextResultReason::Acceptance);
        }
        other => panic!("cannot parse A-ASSOCIATE-AC: {other:?}"),
    }
    stream
}

fn opts(port: u16) -> ScuOptions {
    ScuOptions::new("127.0.0.1", port, "TEST", "BEELDBRUG")
}

/// (3): the gateway still answers a C-ECHO with status 0.
async fn assert_serves(port: u16) {
    let status = tokio::time::timeout(WAIT, scu::echo(&opts(port)))
        .await
        .expect("C-ECHO after bad input timed out")
        .expect("C-ECHO after bad input");
    assert_eq!(status, 0, "C-ECHO status after bad input");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Instances in the blob store now (a case run on a gateway that served others first
/// compares with this).
fn blob_count(data_dir: &Path) -> usize {
    files_under(&data_dir.join("blobs")).len()
}

/// (2): `tmp` is (or soon becomes) empty, and `blobs` holds exactly `expected_blobs` whole
/// instances.
async fn assert_no_leftovers(data_dir: &Path, expected_blobs: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let tmp = files_under(&data_dir.join("tmp"));
        if tmp.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "files left in tmp: {tmp:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blobs = files_under(&data_dir.join("blobs"));
    assert_eq!(blobs.len(), expected_blobs, "blobs: {blobs:?}");
    for blob in blobs {
        dicom_object::open_file(&blob)
            .unwrap_or_else(|e| panic!("{} is not a whole instance: {e}", blob.display()));
    }
}

/// A native (uncompressed) CT instance from the synthetic generator.
fn ct_file(dir: &Path) -> PathBuf {
    generate(dir, false)
        .into_iter()
        .find(|f| f.sop_class_uid == CT_IMAGE_STORAGE && sop::is_native_le(&f.transfer_syntax))
        .expect("a native CT file")
        .path
}

async fn next_command(assoc: &mut Association) -> CommandSet {
    match tokio::time::timeout(WAIT, assoc.next_event())
        .await
        .expect("response timed out")
    {
        Ok(Event::Command { command, .. }) => command,
        other => panic!("expected a command, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Random bytes instead of an A-ASSOCIATE-RQ
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_instead_of_associate_rq() {
    let gw = Gateway::start("").await;
    random_bytes_instead_of_associate_rq_case(&gw).await;
    gw.stop().await;
}

async fn random_bytes_instead_of_associate_rq_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut inputs: Vec<Vec<u8>> = (1..=6)
        .map(|seed| pseudo_random(seed, 64 + 97 * seed as usize))
        .collect();
    // Random bodies behind each PDU type byte, with a length that matches, overshoots
    // (announces more than is sent) or is zero.
    for (i, kind) in [0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xFF]
        .into_iter()
        .enumerate()
    {
        let body = pseudo_random(100 + i as u64, 40);
        for announced in [40u32, 1000, 0] {
            let mut pdu = vec![kind, 0];
            pdu.extend_from_slice(&announced.to_be_bytes());
            pdu.extend_from_slice(&body);
            inputs.push(pdu);
        }
    }
    inputs.push(vec![0x01]); // shorter than a PDU header
    for (i, input) in inputs.iter().enumerate() {
        let mut stream = connect_raw(gw.port).await;
        // The peer may already have closed; a write error is a clean refusal too.
        let _ = stream.write_all(input).await;
        let _ = stream.shutdown().await; // end of our stream: no waiting for more bytes
        let end = expect_clean_end(&mut stream).await;
        assert!(
            matches!(end, End::Aborted | End::Closed),
            "input {i} ({:02X?}...): {end:?}",
            &input[..input.len().min(8)]
        );
    }
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

/// A peer that sends garbage and then just waits is cut off by the PDU timeout.
#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_then_silence_hits_the_timeout() {
    let gw = Gateway::start("[dimse]\ntimeout_secs = 1").await;
    random_bytes_then_silence_hits_the_timeout_case(&gw).await;
    gw.stop().await;
}

async fn random_bytes_then_silence_hits_the_timeout_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut stream = connect_raw(gw.port).await;
    // A plausible A-ASSOCIATE-RQ header announcing more than is ever sent.
    let mut input = vec![0x01, 0x00, 0x00, 0x00, 0x10, 0x00];
    input.extend_from_slice(&pseudo_random(42, 100));
    stream.write_all(&input).await.unwrap();
    let started = Instant::now();
    let end = expect_clean_end(&mut stream).await;
    assert!(matches!(end, End::Aborted | End::Closed), "{end:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 2. A PDU header announcing 4 GiB
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn four_gib_associate_rq_is_refused() {
    let gw = Gateway::start("").await;
    four_gib_associate_rq_is_refused_case(&gw).await;
    gw.stop().await;
}

async fn four_gib_associate_rq_is_refused_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut stream = connect_raw(gw.port).await;
    stream
        .write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    // No shutdown: the gateway must refuse on the header alone, not wait for 4 GiB.
    let end = expect_clean_end(&mut stream).await;
    assert!(matches!(end, End::Aborted | End::Closed), "{end:?}");
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn four_gib_pdata_is_refused() {
    let gw = Gateway::start("").await;
    four_gib_pdata_is_refused_case(&gw).await;
    gw.stop().await;
}

async fn four_gib_pdata_is_refused_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut stream = associate_raw(gw.port, sop::VERIFICATION).await;
    stream
        .write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    let end = expect_clean_end(&mut stream).await;
    assert!(matches!(end, End::Aborted | End::Closed), "{end:?}");
    // Also during a C-STORE: the command arrived, a temp file may have been started.
    let mut stream = associate_raw(gw.port, CT_IMAGE_STORAGE).await;
    let mut rq =
        CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE).with_data_set(true);
    rq.affected_sop_instance = Some("1.2.3.4.5.6.7.8.9".into());
    stream
        .write_all(&pdata(1, true, true, &rq.encode()))
        .await
        .unwrap();
    stream
        .write_all(&pdata(1, false, false, &[0u8; 256]))
        .await
        .unwrap();
    stream
        .write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    let end = expect_clean_end(&mut stream).await;
    assert!(matches!(end, End::Aborted | End::Closed), "{end:?}");
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 3. A truncated P-DATA during a C-STORE
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn truncated_pdata_stores_nothing() {
    let gw = Gateway::start("").await;
    truncated_pdata_stores_nothing_case(&gw).await;
    gw.stop().await;
}

async fn truncated_pdata_stores_nothing_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut stream = associate_raw(gw.port, CT_IMAGE_STORAGE).await;
    let mut rq =
        CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE).with_data_set(true);
    rq.affected_sop_instance = Some("1.2.3.4.5.6.7.8.9".into());
    stream
        .write_all(&pdata(1, true, true, &rq.encode()))
        .await
        .unwrap();
    // A complete first data fragment (so the temp file has content)...
    stream
        .write_all(&pdata(1, false, false, &pseudo_random(3, 2000)))
        .await
        .unwrap();
    // ...then a PDU that announces 4000 bytes of data set but carries 100.
    let mut partial = pdata(1, false, true, &pseudo_random(4, 3994));
    partial.truncate(6 + 100);
    stream.write_all(&partial).await.unwrap();
    stream.shutdown().await.unwrap(); // closed mid-PDU
    let end = expect_clean_end(&mut stream).await;
    assert!(matches!(end, End::Aborted | End::Closed), "{end:?}");
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

/// The same, but the connection is dropped entirely in the middle of a PDV.
#[tokio::test(flavor = "multi_thread")]
async fn connection_dropped_mid_pdv_stores_nothing() {
    let gw = Gateway::start("").await;
    connection_dropped_mid_pdv_stores_nothing_case(&gw).await;
    gw.stop().await;
}

async fn connection_dropped_mid_pdv_stores_nothing_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let mut stream = associate_raw(gw.port, CT_IMAGE_STORAGE).await;
    let mut rq =
        CommandSet::request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE).with_data_set(true);
    rq.affected_sop_instance = Some("1.2.3.4.5.6.7.8.9".into());
    stream
        .write_all(&pdata(1, true, true, &rq.encode()))
        .await
        .unwrap();
    let mut partial = pdata(1, false, true, &pseudo_random(5, 8000));
    partial.truncate(3000);
    stream.write_all(&partial).await.unwrap();
    drop(stream);
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
    // The server must also have finished with the dropped association by now.
    assert_no_leftovers(&gw.data_dir(), before).await;
}

// ---------------------------------------------------------------------------------------
// 4. A data set that does not parse
// ---------------------------------------------------------------------------------------

/// Explicit VR Little Endian element with a 4-byte length.
fn element_long(group: u16, element: u16, vr: &[u8; 2], length: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// `inner` wrapped in `depth` levels of undefined-length sequences and items.
fn nested(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        out.extend_from_slice(&element_long(0x0040, 0xA730, b"SQ", 0xFFFF_FFFF, &[]));
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    out.extend_from_slice(inner);
    for _ in 0..depth {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]); // item delimiter
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]); // sequence delimiter
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_data_set_fails_and_association_goes_on() {
    let gw = Gateway::start("").await;
    unparsable_data_set_fails_and_association_goes_on_case(&gw).await;
    gw.stop().await;
}

async fn unparsable_data_set_fails_and_association_goes_on_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let src = tempfile::tempdir().unwrap();
    let good = ct_file(src.path());

    let contexts = [ProposedContext {
        abstract_syntax: CT_IMAGE_STORAGE.into(),
        transfer_syntaxes: vec![sop::EXPLICIT_VR_LE.into(), sop::IMPLICIT_VR_LE.into()],
        we_are_scp: false,
    }];
    let mut assoc = tokio::time::timeout(WAIT, scu::connect(&opts(gw.port), &contexts))
        .await
        .unwrap()
        .expect("associate");
    let pc = assoc.contexts[0].id;

    // Nested sequences of undefined length, 20000 deep.
    let mut deep = Vec::new();
    for _ in 0..20_000 {
        deep.extend_from_slice(&element_long(0x0040, 0xA730, b"SQ", 0xFFFF_FFFF, &[]));
        deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", pseudo_random(11, 4096)),
        ("empty data set", Vec::new()),
        // An element announcing ~4 GiB of value (must not be allocated).
        (
            "huge element length",
            element_long(0x0009, 0x1010, b"OB", 0xFFFF_FFF0, &pseudo_random(12, 64)),
        ),
        (
            "element with odd header",
            vec![0x08, 0x00, 0x16, 0x00, b'U'],
        ),
        ("deeply nested sequences", deep),
        // Well-formed nesting, 60 deep (the parser must survive it), but no UIDs.
        ("nested sequences, 60 deep", nested(60, &[])),
        // A 4 GiB value hidden inside a sequence item.
        (
            "huge element length inside a sequence",
            nested(
                3,
                &element_long(0x0009, 0x1010, b"OB", 0xFFFF_FFF0, &pseudo_random(13, 64)),
            ),
        ),
        (
            "sequence announcing more than was sent",
            element_long(0x0040, 0xA730, b"SQ", 0xFFFF_FF00, &pseudo_random(14, 64)),
        ),
        // A real data set cut short.
        ("truncated real data set", {
            let bytes = std::fs::read(&good).unwrap();
            bytes[bytes.len() / 3..bytes.len() / 3 + 1500].to_vec()
        }),
    ];
    for (what, data) in &garbage {
        let id = assoc.next_message_id();
        let mut rq =
            CommandSet::request(CommandField::CStoreRq, id, CT_IMAGE_STORAGE).with_data_set(true);
        rq.affected_sop_instance = Some("1.2.3.4.5.6.7.8.9".into());
        assoc.send_command(pc, &rq).await.unwrap();
        assoc.send_data(pc, data).await.unwrap();
        let rsp = next_command(&mut assoc).await;
        assert_eq!(rsp.field, CommandField::CStoreRsp, "{what}");
        assert_eq!(rsp.message_id_responded, Some(id), "{what}");
        assert_eq!(
            rsp.status() & 0xF000,
            0xC000,
            "{what}: status 0x{:04X} ({:?})",
            rsp.status(),
            rsp.error_comment
        );
        assert_no_leftovers(&gw.data_dir(), before).await;
    }

    // The association is still in step: a valid instance is stored.
    let sent = tokio::time::timeout(WAIT, scu::send_file(&mut assoc, &good, None))
        .await
        .unwrap()
        .expect("valid C-STORE after failures");
    assert_eq!(sent.status, 0, "valid C-STORE status");
    tokio::time::timeout(WAIT, assoc.release())
        .await
        .unwrap()
        .expect("release");
    assert_no_leftovers(&gw.data_dir(), before + 1).await;
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 5. An unknown SOP class
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_requests_without_a_usable_identifier_fail_and_association_goes_on() {
    let gw = Gateway::start("").await;
    retrieve_requests_without_a_usable_identifier_fail_and_association_goes_on_case(&gw).await;
    gw.stop().await;
}

/// C-GET and C-MOVE requests whose identifier is missing, unparsable or names no level get
/// a failure response each (PS3.4 C.4.2.1.5 / C.4.3.1.4: 0xA900 or 0xC000 class), with
/// the reason, and the association stays in step for the next request.
async fn retrieve_requests_without_a_usable_identifier_fail_and_association_goes_on_case(
    gw: &Gateway,
) {
    let models = [
        (
            beeldbrug::sop::STUDY_ROOT_GET,
            CommandField::CGetRq,
            CommandField::CGetRsp,
        ),
        (
            beeldbrug::sop::STUDY_ROOT_MOVE,
            CommandField::CMoveRq,
            CommandField::CMoveRsp,
        ),
    ];
    let contexts: Vec<ProposedContext> = models
        .iter()
        .map(|(model, _, _)| ProposedContext {
            abstract_syntax: model.to_string(),
            transfer_syntaxes: vec![sop::EXPLICIT_VR_LE.into()],
            we_are_scp: false,
        })
        .collect();
    let mut assoc = tokio::time::timeout(WAIT, scu::connect(&opts(gw.port), &contexts))
        .await
        .unwrap()
        .expect("associate");
    // An identifier with a Study Instance UID but no Query/Retrieve Level (0008,0052).
    let mut no_level = vec![0x20, 0x00, 0x0D, 0x00, b'U', b'I', 8, 0];
    no_level.extend_from_slice(b"1.2.3.4\0");
    for (model, rq_field, rsp_field) in models {
        let pc = assoc.context_for(model, None).expect("context accepted").id;
        let cases: [(&str, Option<Vec<u8>>); 3] = [
            ("no identifier", None),
            ("random bytes", Some(pseudo_random(21, 600))),
            ("no level", Some(no_level.clone())),
        ];
        for (what, identifier) in cases {
            let id = assoc.next_message_id();
            let mut rq =
                CommandSet::request(rq_field, id, model).with_data_set(identifier.is_some());
            if rq_field == CommandField::CMoveRq {
                rq.move_destination = Some("TEST".into());
            }
            assoc.send_command(pc, &rq).await.unwrap();
            if let Some(data) = &identifier {
                assoc.send_data(pc, data).await.unwrap();
            }
            let rsp = next_command(&mut assoc).await;
            assert_eq!(rsp.field, rsp_field, "{model} {what}");
            assert_eq!(rsp.message_id_responded, Some(id), "{model} {what}");
            let class = rsp.status() & 0xF000;
            assert!(
                class == 0xC000 || class == 0xA000,
                "{model} {what}: status 0x{:04X}",
                rsp.status()
            );
            assert!(
                rsp.error_comment.as_deref().is_some_and(|c| !c.is_empty()),
                "{model} {what}: no Error Comment"
            );
        }
    }
    tokio::time::timeout(WAIT, assoc.release())
        .await
        .unwrap()
        .expect("release after the failed requests");
    assert_serves(gw.port).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_sop_class_context_is_rejected() {
    let gw = Gateway::start("").await;
    retrieve_requests_without_a_usable_identifier_fail_and_association_goes_on_case(&gw).await;
    unknown_sop_class_context_is_rejected_case(&gw).await;
    gw.stop().await;
}

async fn unknown_sop_class_context_is_rejected_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let unknown = ProposedContext {
        abstract_syntax: UNKNOWN_SOP_CLASS.into(),
        transfer_syntaxes: scu::native_syntaxes(),
        we_are_scp: false,
    };
    match tokio::time::timeout(
        WAIT,
        scu::connect(&opts(gw.port), std::slice::from_ref(&unknown)),
    )
    .await
    .unwrap()
    {
        Err(AssociationError::NoContexts) => {}
        Err(e) => panic!("expected NoContexts, got {e}"),
        Ok(_) => panic!("a context for {UNKNOWN_SOP_CLASS} was accepted"),
    }

    // Raw: context 1 (unknown) gets result 3 "abstract syntax not supported", context 3
    // (verification) is accepted in the same A-ASSOCIATE-AC.
    let mut stream = connect_raw(gw.port).await;
    stream
        .write_all(&associate_rq(
            "TEST",
            &[(1, UNKNOWN_SOP_CLASS), (3, sop::VERIFICATION)],
        ))
        .await
        .unwrap();
    let (kind, body) = read_raw_pdu(&mut stream).await.expect("A-ASSOCIATE-AC");
    assert_eq!(kind, 0x02);
    let mut whole = vec![kind, 0];
    whole.extend_from_slice(&(body.len() as u32).to_be_bytes());
    whole.extend_from_slice(&body);
    let Ok(Some(Pdu::AssociationAC(ac))) = read_pdu(&whole[..], 1 << 20, true) else {
        panic!("cannot parse A-ASSOCIATE-AC")
    };
    let result = |id| {
        ac.presentation_contexts
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.reason.clone())
    };
    assert_eq!(
        result(1),
        Some(PresentationContextResultReason::AbstractSyntaxNotSupported)
    );
    assert_eq!(result(3), Some(PresentationContextResultReason::Acceptance));
    // The result bytes themselves, straight from the wire: walk the items after the fixed
    // fields (PS3.8 9.3.3); a presentation context item (0x21) holds id, reserved, result.
    let mut results = Vec::new();
    let mut pos = 68;
    while pos + 4 <= body.len() {
        let len = u16::from_be_bytes([body[pos + 2], body[pos + 3]]) as usize;
        if body[pos] == 0x21 {
            results.push((body[pos + 4], body[pos + 6]));
        }
        pos += 4 + len;
    }
    assert_eq!(
        results,
        vec![(1, 3), (3, 0)],
        "(context id, result) on the wire"
    );
    stream
        .write_all(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])
        .await
        .unwrap(); // A-RELEASE-RQ
    let (kind, _) = read_raw_pdu(&mut stream).await.expect("A-RELEASE-RP");
    assert_eq!(kind, 0x06);

    // storescu with a file whose SOP class was rewritten to an unknown one.
    let src = tempfile::tempdir().unwrap();
    let file = ct_file(src.path());
    let modified = dcmtk(
        "dcmodify",
        &[
            "-nb",
            "-m",
            &format!("(0008,0016)={UNKNOWN_SOP_CLASS}"),
            file.to_str().unwrap(),
        ],
    );
    assert!(
        modified.status.success(),
        "dcmodify: {}",
        String::from_utf8_lossy(&modified.stderr)
    );
    let meta = dicom_object::open_file(&file).unwrap();
    assert_eq!(
        meta.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0'),
        UNKNOWN_SOP_CLASS
    );
    let port = gw.port.to_string();
    let file_arg = file.to_str().unwrap().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            dcmtk(
                "storescu",
                &[
                    "-to",
                    "10",
                    "-ta",
                    "10",
                    "-td",
                    "10",
                    "-aet",
                    "TEST",
                    "-aec",
                    "BEELDBRUG",
                    "127.0.0.1",
                    &port,
                    &file_arg,
                ],
            )
        }),
    )
    .await
    .expect("storescu hung")
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "storescu of an unknown SOP class succeeded: {log}"
    );
    assert!(
        log.contains("No Acceptable Presentation Contexts")
            || log.contains("No presentation context")
            || log.to_lowercase().contains("unknown sop class"),
        "storescu should fail on the context, not on the connection: {log}"
    );
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 6. Unknown calling AE when only known peers are allowed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn unknown_calling_ae_is_rejected() {
    let gw = Gateway::start(
        "[dimse]\nallow_unknown_callers = false\n[[dimse.peers]]\nae_title = \"TEST\"\nhost = \"127.0.0.1\"\nport = 4242\n",
    )
    .await;
    unknown_calling_ae_is_rejected_case(&gw).await;
    gw.stop().await;
}

async fn unknown_calling_ae_is_rejected_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    // Raw: A-ASSOCIATE-RJ, permanent (1), service user (1), calling AE not recognized (3).
    let mut stream = connect_raw(gw.port).await;
    stream
        .write_all(&associate_rq("STRANGER", &[(1, sop::VERIFICATION)]))
        .await
        .unwrap();
    assert_eq!(
        expect_clean_end(&mut stream).await,
        End::Rejected {
            result: 1,
            source: 1,
            reason: 3
        }
    );
    // Through our SCU.
    let stranger = ScuOptions::new("127.0.0.1", gw.port, "STRANGER", "BEELDBRUG");
    match tokio::time::timeout(WAIT, scu::echo(&stranger))
        .await
        .unwrap()
    {
        Err(AssociationError::Rejected(why)) => {
            assert!(why.contains("CallingAETitleNotRecognized"), "{why}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_no_leftovers(&gw.data_dir(), before).await;
    // The known peer is accepted.
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 7. More associations than the limit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn associations_beyond_the_limit_are_rejected() {
    let gw = Gateway::start("[dimse]\nmax_associations = 2").await;
    associations_beyond_the_limit_are_rejected_case(&gw).await;
    gw.stop().await;
}

async fn associations_beyond_the_limit_are_rejected_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let verification = [ProposedContext {
        abstract_syntax: sop::VERIFICATION.into(),
        transfer_syntaxes: scu::native_syntaxes(),
        we_are_scp: false,
    }];
    // Take every slot. On a gateway that served other cases first, connections those ended
    // may still be letting go of theirs: wait for each slot, boundedly.
    // From one address (all of ours are 127.0.0.1) the per-address limit comes first.
    let dimse = &gw.context().config.dimse;
    let limit = dimse
        .max_associations
        .min(dimse.max_associations_per_address);
    let mut held = Vec::with_capacity(limit);
    let deadline = Instant::now() + WAIT;
    while held.len() < limit {
        match tokio::time::timeout(WAIT, scu::connect(&opts(gw.port), &verification))
            .await
            .expect("associating timed out")
        {
            Ok(assoc) => held.push(assoc),
            Err(AssociationError::Rejected(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("association {} of {limit}: {e}", held.len() + 1),
        }
    }
    let mut held = held.into_iter();
    let first = held.next().expect("first association");

    // Raw: A-ASSOCIATE-RJ, transient (2), service provider presentation (3), local limit
    // exceeded (2).
    let mut stream = connect_raw(gw.port).await;
    stream
        .write_all(&associate_rq("TEST", &[(1, sop::VERIFICATION)]))
        .await
        .unwrap();
    assert_eq!(
        expect_clean_end(&mut stream).await,
        End::Rejected {
            result: 2,
            source: 3,
            reason: 2
        }
    );
    match tokio::time::timeout(WAIT, scu::echo(&opts(gw.port)))
        .await
        .unwrap()
    {
        Err(AssociationError::Rejected(why)) => {
            assert!(why.contains("LocalLimitExceeded"), "{why}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    tokio::time::timeout(WAIT, first.release())
        .await
        .unwrap()
        .expect("release");
    // The slot frees once the gateway has finished with the released association.
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(WAIT, scu::echo(&opts(gw.port)))
            .await
            .unwrap()
        {
            Ok(status) => {
                assert_eq!(status, 0);
                break;
            }
            Err(AssociationError::Rejected(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no slot after a release: {e}"),
        }
    }
    for other in held {
        tokio::time::timeout(WAIT, other.release())
            .await
            .unwrap()
            .expect("release");
    }
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

// ---------------------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_open_association() {
    let mut gw = Gateway::start("").await;
    graceful_shutdown_finishes_open_association_case(&mut gw).await;
}

async fn graceful_shutdown_finishes_open_association_case(gw: &mut Gateway) {
    let before = blob_count(&gw.data_dir());
    let port = gw.port;
    let verification = [ProposedContext {
        abstract_syntax: sop::VERIFICATION.into(),
        transfer_syntaxes: scu::native_syntaxes(),
        we_are_scp: false,
    }];
    let mut assoc = scu::connect(&opts(port), &verification)
        .await
        .expect("association");
    let pc = assoc.contexts[0].id;

    let running = gw.running.take().expect("running");
    let stopping = tokio::spawn(running.stop());

    // New connections are refused once shutdown has begun.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            // Reset while the listening socket closes: try again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                assert!(Instant::now() < deadline, "listener never closed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                // Accepted just before the listener closed, or still in its backlog.
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections after shutdown"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    match tokio::time::timeout(WAIT, scu::echo(&opts(port)))
        .await
        .unwrap()
    {
        Err(_) => {}
        Ok(status) => panic!("a new association after shutdown got C-ECHO status {status}"),
    }
    assert!(
        !stopping.is_finished(),
        "shutdown did not wait for the open association"
    );

    // The open association still works and releases normally.
    let id = assoc.next_message_id();
    assoc
        .send_command(
            pc,
            &CommandSet::request(CommandField::CEchoRq, id, sop::VERIFICATION),
        )
        .await
        .expect("C-ECHO-RQ during shutdown");
    let rsp = next_command(&mut assoc).await;
    assert_eq!(rsp.field, CommandField::CEchoRsp);
    assert_eq!(rsp.message_id_responded, Some(id));
    assert_eq!(rsp.status(), 0);
    tokio::time::timeout(WAIT, assoc.release())
        .await
        .unwrap()
        .expect("release during shutdown");

    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown did not finish after the last association ended")
        .unwrap();
    assert_no_leftovers(&gw.data_dir(), before).await;
}

// ---------------------------------------------------------------------------------------
// 9. Hostile data sets: whole up to Pixel Data, hostile after it (issue 18)
// ---------------------------------------------------------------------------------------

/// A native CT in `transfer_syntax`, not the one other cases store.
fn ct_in(dir: &Path, transfer_syntax: &str) -> beeldbrug::testdata::GeneratedFile {
    generate(dir, false)
        .into_iter()
        .rev()
        .find(|f| f.sop_class_uid == CT_IMAGE_STORAGE && f.transfer_syntax == transfer_syntax)
        .expect("a CT in the transfer syntax")
}

fn explicit_ct(dir: &Path) -> beeldbrug::testdata::GeneratedFile {
    ct_in(dir, sop::EXPLICIT_VR_LE)
}

/// The data set of a Part 10 file: everything after its file meta group.
fn data_set_of(path: &Path) -> Vec<u8> {
    let layout = beeldbrug::dimse::dataset::read_layout(path).expect("file meta");
    std::fs::read(path).expect("read file")[layout.dataset_offset as usize..].to_vec()
}

/// A trailing element after Pixel Data holding `depth` nested sequences of undefined length,
/// in Explicit or Implicit VR Little Endian: Digital Signatures Sequence (FFFA,FFFA), the
/// one standard sequence that follows Pixel Data, then Content Sequences (0040,A730).
fn trailing_nested(depth: usize, explicit: bool) -> Vec<u8> {
    let open = |group: u16, element: u16| {
        if explicit {
            element_long(group, element, b"SQ", 0xFFFF_FFFF, &[])
        } else {
            // PS3.5 7.1.3: tag and a 4-byte length, no VR.
            let mut header = group.to_le_bytes().to_vec();
            header.extend_from_slice(&element.to_le_bytes());
            header.extend_from_slice(&[0xFF; 4]);
            header
        }
    };
    let mut out = Vec::new();
    for level in 0..depth {
        let (group, element) = if level == 0 {
            (0xFFFA, 0xFFFA)
        } else {
            (0x0040, 0xA730)
        };
        out.extend_from_slice(&open(group, element));
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]); // item delimiter
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]); // sequence delimiter
    }
    out
}

/// Nested sequences after Pixel Data whose last element, an OB, announces 200 MB; 1 MB of it
/// follows, then the data set ends (no delimiters): a data set cut short.
fn trailing_truncated_ob() -> Vec<u8> {
    let mut out = element_long(0xFFFA, 0xFFFA, b"SQ", 0xFFFF_FFFF, &[]);
    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    for _ in 0..3 {
        out.extend_from_slice(&element_long(0x0040, 0xA730, b"SQ", 0xFFFF_FFFF, &[]));
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    // (0042,0011) Encapsulated Document.
    out.extend_from_slice(&element_long(
        0x0042,
        0x0011,
        b"OB",
        200 * 1024 * 1024,
        &pseudo_random(18, 1024 * 1024),
    ));
    out
}

/// C-STORE `data` (an Explicit VR Little Endian data set of `file`'s instance) over a fresh
/// association; the C-STORE-RSP status.
async fn c_store_data_set(
    port: u16,
    file: &beeldbrug::testdata::GeneratedFile,
    data: &[u8],
) -> u16 {
    let contexts = [ProposedContext {
        abstract_syntax: CT_IMAGE_STORAGE.into(),
        transfer_syntaxes: vec![sop::EXPLICIT_VR_LE.into()],
        we_are_scp: false,
    }];
    let mut assoc = tokio::time::timeout(WAIT, scu::connect(&opts(port), &contexts))
        .await
        .unwrap()
        .expect("associate");
    let pc = assoc.contexts[0].id;
    let id = assoc.next_message_id();
    let mut rq =
        CommandSet::request(CommandField::CStoreRq, id, CT_IMAGE_STORAGE).with_data_set(true);
    rq.affected_sop_instance = Some(file.sop_uid.clone());
    assoc.send_command(pc, &rq).await.unwrap();
    tokio::time::timeout(WAIT, assoc.send_data(pc, data))
        .await
        .expect("sending timed out")
        .unwrap();
    let rsp = next_command(&mut assoc).await;
    assert_eq!(rsp.field, CommandField::CStoreRsp);
    assert_eq!(rsp.message_id_responded, Some(id));
    tokio::time::timeout(WAIT, assoc.release())
        .await
        .unwrap()
        .expect("release");
    rsp.status()
}

/// STOW-RS `data` (the data set of `file`'s instance) as one Part 10 part; the
/// FailureReason (0008,1197) of its failed-SOP item, or `None` when it was stored.
async fn stow_data_set(
    http_port: u16,
    file: &beeldbrug::testdata::GeneratedFile,
    data: &[u8],
) -> Option<u64> {
    let mut part = beeldbrug::dimse::dataset::file_header(
        CT_IMAGE_STORAGE,
        &file.sop_uid,
        sop::EXPLICIT_VR_LE,
        "TEST",
    )
    .unwrap();
    part.extend_from_slice(data);
    let body = common::http::multipart("Hostile18", &[("application/dicom", &part)]);
    let r = common::http::request(
        http_port,
        "POST",
        "/dicomweb/studies",
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=Hostile18",
        )],
        &body,
    )
    .await;
    if r.status == 200 {
        return None;
    }
    assert_eq!(r.status, 409, "STOW-RS of one bad part: {}", r.text());
    let json = r.json();
    json["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64()
}

/// Nothing of `sop_uid` is kept: no temp file, no blob beyond `blobs`, no index row.
async fn assert_not_kept(gw: &Gateway, blobs: usize, sop_uid: &str) {
    assert_no_leftovers(&gw.data_dir(), blobs).await;
    let selection = beeldbrug::core::Selection {
        sop_instance_uids: vec![sop_uid.to_string()],
        ..Default::default()
    };
    let rows = gw
        .context()
        .index
        .count_instances(&selection)
        .await
        .unwrap();
    assert_eq!(rows, 0, "{sop_uid} is findable");
}

/// Issue 18 (1): 1,000 nested sequences after Pixel Data were acknowledged (the structure
/// check stopped at Pixel Data) and crashed the gateway on the next conversion. They are
/// refused now, over C-STORE (0xC000) and STOW-RS (FailureReason 0xC000), and nothing stays.
#[tokio::test(flavor = "multi_thread")]
async fn trailing_deep_nesting_is_refused() {
    let gw = Gateway::start("").await;
    trailing_deep_nesting_is_refused_case(&gw).await;
    gw.stop().await;
}

async fn trailing_deep_nesting_is_refused_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let src = tempfile::tempdir().unwrap();
    let ct = explicit_ct(src.path());
    let mut hostile = data_set_of(&ct.path);
    hostile.extend_from_slice(&trailing_nested(1000, true));
    let status = c_store_data_set(gw.port, &ct, &hostile).await;
    assert_eq!(status & 0xF000, 0xC000, "C-STORE status 0x{status:04X}");
    assert_not_kept(gw, before, &ct.sop_uid).await;
    assert_eq!(
        stow_data_set(gw.http_port, &ct, &hostile).await,
        Some(0xC000)
    );
    assert_not_kept(gw, before, &ct.sop_uid).await;
    // Nesting up to the limit is still accepted; one level more is not.
    let mut deepest = data_set_of(&ct.path);
    deepest.extend_from_slice(&trailing_nested(64, true));
    let mut too_deep = data_set_of(&ct.path);
    too_deep.extend_from_slice(&trailing_nested(65, true));
    let status = c_store_data_set(gw.port, &ct, &too_deep).await;
    assert_eq!(status & 0xF000, 0xC000, "65 levels: status 0x{status:04X}");
    assert_not_kept(gw, before, &ct.sop_uid).await;
    assert_eq!(
        c_store_data_set(gw.port, &ct, &deepest).await,
        0,
        "64 levels"
    );
    let selection = beeldbrug::core::Selection {
        sop_instance_uids: vec![ct.sop_uid.clone()],
        ..Default::default()
    };
    // Leave the store as found (a shared gateway's later cases count its blobs).
    let key = gw
        .context()
        .index
        .remove_instance(&ct.sop_uid)
        .await
        .unwrap()
        .expect("the 64-level instance was indexed");
    assert_eq!(
        gw.context()
            .index
            .count_instances(&selection)
            .await
            .unwrap(),
        0
    );
    std::fs::remove_file(gw.data_dir().join("blobs").join(key)).unwrap();
    assert_no_leftovers(&gw.data_dir(), before).await;
    assert_serves(gw.port).await;
}

/// Issue 18 (2): a data set whole up to Pixel Data, then nested sequences whose last OB
/// announces 200 MB of which 1 MB arrives, was acknowledged and findable. Refused now, over
/// C-STORE and STOW-RS, and nothing is kept.
#[tokio::test(flavor = "multi_thread")]
async fn truncated_trailing_value_is_refused() {
    let gw = Gateway::start("").await;
    truncated_trailing_value_is_refused_case(&gw).await;
    gw.stop().await;
}

async fn truncated_trailing_value_is_refused_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let src = tempfile::tempdir().unwrap();
    let ct = explicit_ct(src.path());
    let mut truncated = data_set_of(&ct.path);
    truncated.extend_from_slice(&trailing_truncated_ob());
    let status = c_store_data_set(gw.port, &ct, &truncated).await;
    assert_eq!(status & 0xF000, 0xC000, "C-STORE status 0x{status:04X}");
    assert_not_kept(gw, before, &ct.sop_uid).await;
    assert_eq!(
        stow_data_set(gw.http_port, &ct, &truncated).await,
        Some(0xC000)
    );
    assert_not_kept(gw, before, &ct.sop_uid).await;
    assert_serves(gw.port).await;
}

/// Put the Part 10 file `bytes` straight into the blob store and the index, bypassing
/// ingest (as an older version, a restore or another tool could have): its blob key.
async fn place_in_store(gw: &Gateway, bytes: &[u8]) -> beeldbrug::store::InstanceRecord {
    let staged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(staged.path(), bytes).unwrap();
    // Up to Pixel Data only: the hostile part after it would take this test down too.
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(beeldbrug::dimse::dataset::PIXEL_DATA)
        .open_file(staged.path())
        .expect("the placed instance parses up to Pixel Data");
    let mut record = beeldbrug::store::InstanceRecord::from_object(&obj);
    record.blob_key = beeldbrug::store::BlobStore::key_for(
        record.study_instance_uid(),
        record.series_instance_uid(),
        record.sop_instance_uid(),
    )
    .unwrap();
    record.size_bytes = bytes.len() as u64;
    record.transfer_syntax_uid = obj.meta().transfer_syntax().trim_end_matches('\0').into();
    let path = gw.context().blobs.path(&record.blob_key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    gw.context()
        .index
        .upsert_instances(std::slice::from_ref(&record))
        .await
        .expect("index the placed instance");
    record
}

/// GET `path` and read whatever arrives: a streamed response that fails part-way ends
/// without its last chunk (or with a reset), which is not an error here.
async fn get_whatever_arrives(port: u16, path: &str, accept: &str) -> common::http::HttpResponse {
    let mut stream = common::http::send(port, "GET", path, &[("Accept", accept)], b"").await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("response hangs")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    common::http::parse(&raw)
}

/// The request failed and said so: an error status, or a streamed 200 whose body was cut
/// off (a multipart body without its close delimiter, JSON that does not parse).
fn failed_cleanly(r: &common::http::HttpResponse) -> bool {
    if r.status >= 400 {
        return true;
    }
    let content_type = r.header("Content-Type").unwrap_or("");
    if let Some(boundary) = content_type.split("boundary=").nth(1) {
        let close = format!("--{}--", boundary.trim_matches('"'));
        return !r.body.windows(close.len()).any(|w| w == close.as_bytes());
    }
    serde_json::from_slice::<serde_json::Value>(&r.body).is_err()
}

/// C-GET one instance with pynetdicom (`tests/scu/c_get_one.py`), offering only
/// Implicit VR Little Endian; its JSON report.
async fn c_get_implicit_only(
    port: u16,
    record: &beeldbrug::store::InstanceRecord,
) -> serde_json::Value {
    common::c_get_one(
        port,
        [
            record.study_instance_uid(),
            record.series_instance_uid(),
            record.sop_instance_uid(),
        ],
        None,
    )
    .await
}

/// C-GET one instance with DCMTK getscu as it comes (it proposes Explicit VR Little and Big
/// Endian for the storage sub-operations, not Implicit); the files received and its log.
async fn getscu_instance(
    port: u16,
    record: &beeldbrug::store::InstanceRecord,
) -> (Vec<PathBuf>, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-v",
        "-S",
        "-to",
        "10",
        "-ta",
        "10",
        "-td",
        "10",
        "-aet",
        "TEST",
        "-aec",
        "BEELDBRUG",
        "-od",
        out_dir.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=IMAGE",
        "-k",
        &format!("StudyInstanceUID={}", record.study_instance_uid()),
        "-k",
        &format!("SeriesInstanceUID={}", record.series_instance_uid()),
        "-k",
        &format!("SOPInstanceUID={}", record.sop_instance_uid()),
        "127.0.0.1",
        &port.to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let run = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dcmtk("getscu", &args)
        }),
    )
    .await
    .expect("getscu hung")
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (files_under(out_dir.path()), log)
}

/// Issue 18 (1): instances with 1,000 nested sequences after Pixel Data, placed straight into
/// the store (whatever ingest checks, such files can be there), then retrieved through every
/// path that converts them: C-GET offering only Implicit VR Little Endian (pynetdicom) for
/// one stored in Explicit VR, DCMTK getscu (Explicit VR only) for one stored in Implicit VR,
/// WADO-RS with transfer-syntax=1.2.840.10008.1.2, metadata, rendered, frames, bulk data.
/// Each request fails on its own; the gateway goes on serving. Before the fix the first
/// conversion overflowed the stack and aborted the process.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_instance_in_the_store_fails_each_retrieve_alone() {
    let gw = Gateway::start("").await;
    hostile_instance_in_the_store_fails_each_retrieve_alone_case(&gw).await;
    gw.stop().await;
}

async fn hostile_instance_in_the_store_fails_each_retrieve_alone_case(gw: &Gateway) {
    let before = blob_count(&gw.data_dir());
    let src = tempfile::tempdir().unwrap();
    let mut placed = Vec::new();
    for (ts, explicit) in [(sop::EXPLICIT_VR_LE, true), (sop::IMPLICIT_VR_LE, false)] {
        let ct = ct_in(src.path(), ts);
        let mut bytes = std::fs::read(&ct.path).unwrap();
        bytes.extend_from_slice(&trailing_nested(1000, explicit));
        placed.push(place_in_store(gw, &bytes).await);
    }
    let (explicit, implicit) = (&placed[0], &placed[1]);

    // C-GET, Explicit VR stored, Implicit VR wanted: the sub-operation fails, the C-GET ends
    // with a final response on an association still in step.
    let report = c_get_implicit_only(gw.port, explicit).await;
    assert_eq!(report["received"], serde_json::json!([]), "{report}");
    assert_eq!(report["counts"]["failed"], 1, "{report}");
    assert_eq!(report["established_to_the_end"], true, "{report}");
    assert_serves(gw.port).await;

    // C-GET by DCMTK getscu, Implicit VR stored, Explicit VR wanted.
    let (received, log) = getscu_instance(gw.port, implicit).await;
    assert!(received.is_empty(), "getscu received {received:?}: {log}");
    assert!(
        log.contains("Final status report") && log.contains("Failed Suboperations    : 1"),
        "the C-GET must end with a final response counting one failure: {log}"
    );
    assert_serves(gw.port).await;

    // WADO-RS, every conversion path.
    let uids = |r: &beeldbrug::store::InstanceRecord| {
        (
            r.study_instance_uid().to_string(),
            r.series_instance_uid().to_string(),
            r.sop_instance_uid().to_string(),
        )
    };
    let (study, series, instance) = uids(explicit);
    let base = format!("/dicomweb/studies/{study}/series/{series}/instances/{instance}");
    let implicit_ts = "transfer-syntax=1.2.840.10008.1.2";
    let dicom_parts = "multipart/related; type=\"application/dicom\"";
    let (other_study, other_series, other_instance) = uids(implicit);
    let requests = [
        (base.clone(), format!("{dicom_parts}; {implicit_ts}")),
        (
            format!("/dicomweb/studies/{study}"),
            format!("{dicom_parts}; {implicit_ts}"),
        ),
        (base.clone(), format!("application/dicom; {implicit_ts}")),
        // Stored in Implicit VR: the default (Explicit VR) needs a conversion too.
        (
            format!(
                "/dicomweb/studies/{other_study}/series/{other_series}/instances/{other_instance}"
            ),
            dicom_parts.to_string(),
        ),
        (format!("{base}/metadata"), "application/dicom+json".into()),
        (
            format!("/dicomweb/studies/{study}/metadata"),
            "application/dicom+json".into(),
        ),
        (format!("{base}/rendered"), "image/jpeg".into()),
        (format!("{base}/thumbnail"), "image/jpeg".into()),
        (
            format!("{base}/frames/1"),
            "multipart/related; type=\"application/octet-stream\"".into(),
        ),
        (
            format!("{base}/bulkdata/7FE00010"),
            "application/octet-stream".into(),
        ),
    ];
    for (path, accept) in &requests {
        let r = get_whatever_arrives(gw.http_port, path, accept).await;
        assert!(
            failed_cleanly(&r),
            "GET {path} ({accept}): {} {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        );
        let health = common::http::request(gw.http_port, "GET", "/health", &[], b"").await;
        assert_eq!(health.status, 200, "/health after GET {path}");
    }
    assert_serves(gw.port).await;

    // Leave the store as found (a shared gateway's later cases count its blobs).
    for record in &placed {
        gw.context()
            .index
            .remove_instance(record.sop_instance_uid())
            .await
            .unwrap()
            .expect("the placed instance was indexed");
        std::fs::remove_file(gw.context().blobs.path(&record.blob_key)).unwrap();
    }
    assert_no_leftovers(&gw.data_dir(), before).await;
}

// ---------------------------------------------------------------------------------------
// 10. Everything against one gateway
// ---------------------------------------------------------------------------------------

/// Every case of this file against ONE gateway process, one after another (issue 18: "the
/// process survives everything in tests/bad_input.rs and the new cases in one run"), with
/// a configuration that serves each: a short PDU timeout, only known callers (TEST is
/// known). At the end it still answers C-ECHO and `/health`, and then shuts down cleanly.
/// Issue 18 item 3 inside the one-process run: 25 connections that never send a byte and 25
/// that sent the start of an A-ASSOCIATE-RQ and stopped hold no association slot, so a real
/// peer is still served while they are open (before the fix: "Local Limit Exceeded").
/// `tests/dimse_slots.rs` times this and the ARTIM closing.
async fn half_open_connections_do_not_lock_peers_out_case(gw: &Gateway) {
    let mut held = Vec::with_capacity(50);
    for n in 0..50 {
        let mut stream = connect_raw(gw.port).await;
        if n % 2 == 1 {
            // PDU type 1 and the first bytes of its length: an A-ASSOCIATE-RQ begun.
            stream.write_all(&[0x01, 0x00, 0x00]).await.unwrap();
        }
        held.push(stream);
    }
    assert_serves(gw.port).await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_gateway_survives_every_case() {
    let mut gw = Gateway::start(
        "[dimse]\ntimeout_secs = 2\nallow_unknown_callers = false\n[[dimse.peers]]\nae_title = \"TEST\"\nhost = \"127.0.0.1\"\nport = 4242\n",
    )
    .await;
    random_bytes_instead_of_associate_rq_case(&gw).await;
    random_bytes_then_silence_hits_the_timeout_case(&gw).await;
    four_gib_associate_rq_is_refused_case(&gw).await;
    four_gib_pdata_is_refused_case(&gw).await;
    truncated_pdata_stores_nothing_case(&gw).await;
    connection_dropped_mid_pdv_stores_nothing_case(&gw).await;
    unparsable_data_set_fails_and_association_goes_on_case(&gw).await;
    unknown_sop_class_context_is_rejected_case(&gw).await;
    unknown_calling_ae_is_rejected_case(&gw).await;
    associations_beyond_the_limit_are_rejected_case(&gw).await;
    trailing_deep_nesting_is_refused_case(&gw).await;
    truncated_trailing_value_is_refused_case(&gw).await;
    hostile_instance_in_the_store_fails_each_retrieve_alone_case(&gw).await;
    half_open_connections_do_not_lock_peers_out_case(&gw).await;
    assert_serves(gw.port).await;
    let health = common::http::request(gw.http_port, "GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200, "/health at the end");
    graceful_shutdown_finishes_open_association_case(&mut gw).await;
}
