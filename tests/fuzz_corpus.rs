//! Replays the cargo-fuzz corpora (`fuzz/corpus/command_set`, `fuzz/corpus/pdata`) through
//! the same functions and checks as the fuzz targets in `fuzz/fuzz_targets/`, so CI
//! exercises every seed and every input the fuzzer kept without needing the fuzzer (or a
//! nightly toolchain). Keep the checks here in step with the targets.

use beeldbrug::dimse::command::{CommandSet, MAX_COMMAND_SET};
use beeldbrug::dimse::negotiate::{accept, AcceptPolicy, LinkOptions, Refusal};
use beeldbrug::dimse::pdu::{parse_pdata, Frame, PduReader, Pdv};
use beeldbrug::dimse::Event;
use bytes::Bytes;
use dicom_ul::pdu::{
    write_pdu, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Every regular, non-hidden file of one corpus, with its contents.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            (path.is_file() && !name.starts_with('.')).then(|| {
                let bytes = std::fs::read(&path).expect("read corpus file");
                (path, bytes)
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

// ---------------------------------------------------------------------------------------
// command_set
// ---------------------------------------------------------------------------------------

/// decode(encode(c)) == c, up to what `encode` normalises on purpose: the Error Comment
/// (LO) is sent as at most 64 printable ASCII characters, and padding is trimmed on decode.
/// Same as `check_round_trip` in `fuzz/fuzz_targets/command_set.rs`.
fn check_round_trip(decoded: CommandSet) {
    let encoded = decoded.encode();
    assert_eq!(encoded.len() % 2, 0, "odd-length command set");
    if encoded.len() > MAX_COMMAND_SET {
        return;
    }
    let again = CommandSet::decode(&encoded).expect("an encoded command set decodes");
    let mut expected = decoded;
    expected.error_comment = expected.error_comment.map(|c| {
        c.chars()
            .filter(|c| c.is_ascii() && !c.is_control())
            .take(64)
            .collect::<String>()
            .trim_matches(|c| c == ' ' || c == '\0')
            .to_string()
    });
    assert_eq!(again, expected);
    // Once normalised, the round trip is exact and the encoding a fixed point.
    let stable = again.encode();
    assert_eq!(CommandSet::decode(&stable).as_ref(), Ok(&again));
    assert_eq!(CommandSet::decode(&stable).map(|c| c.encode()), Ok(stable));
}

#[test]
fn command_set_corpus_replays() {
    let mut decoded = 0;
    for (path, bytes) in corpus("command_set") {
        let result = std::panic::catch_unwind(|| {
            CommandSet::decode(&bytes)
                .ok()
                .map(check_round_trip)
                .is_some()
        });
        match result {
            Ok(true) => decoded += 1,
            Ok(false) => {}
            Err(_) => panic!("{} fails", path.display()),
        }
    }
    // The seeds include valid command sets: the round trip must have run on some.
    assert!(decoded > 0, "no corpus file decodes");
}

// ---------------------------------------------------------------------------------------
// pdata
// ---------------------------------------------------------------------------------------

fn associate_rq() -> Vec<u8> {
    let ts = vec![
        "1.2.840.10008.1.2.1".to_string(),
        "1.2.840.10008.1.2".to_string(),
    ];
    let pc = |id: u8, abs: &str| PresentationContextProposed {
        id,
        abstract_syntax: abs.to_string(),
        transfer_syntaxes: ts.clone(),
    };
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "FUZZ".into(),
        called_ae_title: "BEELDBRUG".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![
            pc(1, "1.2.840.10008.1.1"),
            pc(3, "1.2.840.10008.5.1.4.1.1.2"),
            pc(5, "1.2.840.10008.5.1.4.1.2.2.1"),
        ],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    };
    let mut out = Vec::new();
    write_pdu(&mut out, &Pdu::AssociationRQ(rq)).expect("encode A-ASSOCIATE-RQ");
    out
}

struct AcceptAll;

impl AcceptPolicy for AcceptAll {
    fn admit(&self, _rq: &AssociationRQ) -> Result<(), Refusal> {
        Ok(())
    }
    fn choose_transfer_syntax(
        &self,
        pc: &PresentationContextProposed,
    ) -> Result<String, PresentationContextResultReason> {
        pc.transfer_syntaxes
            .first()
            .cloned()
            .ok_or(PresentationContextResultReason::TransferSyntaxesNotSupported)
    }
}

fn check_pdvs(pdvs: &[Pdv], body_len: usize) {
    assert!(!pdvs.is_empty(), "P-DATA-TF without PDVs accepted");
    let total: usize = pdvs.iter().map(|p| 6 + p.data.len()).sum();
    assert_eq!(total, body_len, "PDVs do not account for every byte");
}

/// Run an acceptor on a connection whose whole input is `prefix` + `data`; returns the
/// number of events it produced.
async fn serve_bytes(prefix: &[u8], data: &[u8]) -> usize {
    let (client, server) = tokio::io::duplex(prefix.len() + data.len() + 64 * 1024);
    let (_client_read, mut client_write) = tokio::io::split(client);
    client_write.write_all(prefix).await.expect("duplex write");
    client_write.write_all(data).await.expect("duplex write");
    client_write.shutdown().await.expect("duplex shutdown");
    let link = LinkOptions {
        max_pdu: 16384,
        timeout: Duration::from_secs(2),
    };
    let Ok(mut assoc) = accept(server, "fuzz".into(), "BEELDBRUG", &link, &AcceptAll).await else {
        return 0;
    };
    let mut events = 0;
    for _ in 0..=data.len() {
        match assoc.next_event().await {
            Ok(Event::Command { .. }) | Ok(Event::Data(_)) => events += 1,
            _ => break,
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn pdata_corpus_replays() {
    let rq = associate_rq();
    let (mut parsed, mut events) = (0, 0);
    for (path, bytes) in corpus("pdata") {
        let name = path.display().to_string();
        if let Ok(pdvs) = parse_pdata(Bytes::copy_from_slice(&bytes)) {
            check_pdvs(&pdvs, bytes.len());
            parsed += 1;
        }
        let replay = async {
            let mut reader = PduReader::new(&bytes[..], 16384, Duration::from_secs(2));
            while let Ok(frame) = reader.read().await {
                if let Frame::PData(pdvs) = frame {
                    assert!(!pdvs.is_empty());
                }
            }
            serve_bytes(&[], &bytes).await + serve_bytes(&rq, &bytes).await
        };
        events += tokio::time::timeout(Duration::from_secs(10), replay)
            .await
            .unwrap_or_else(|_| panic!("{name} hangs"));
    }
    assert!(parsed > 0, "no corpus file parses as a P-DATA-TF body");
    assert!(events > 0, "no corpus file produced a DIMSE event");
}
