// Checks of the `pdata` fuzz target, shared by `fuzz/fuzz_targets/pdata.rs` and the corpus
// replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one copy of each
// check).

use beeldbrug::dimse::negotiate::{accept, AcceptPolicy, LinkOptions, Refusal};
use beeldbrug::dimse::pdu::{parse_pdata, Frame, PduReader, Pdv};
use beeldbrug::dimse::Event;
use bytes::Bytes;
use dicom_ul::pdu::{
    write_pdu, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// P-DATA-TF and PDU framing on arbitrary bytes, three ways:
/// 1. `parse_pdata` on the bytes as a P-DATA-TF body;
/// 2. `PduReader` reading PDUs from the bytes as a stream;
/// 3. an acceptor (`negotiate::accept`) fed the bytes as the whole connection, and fed a
///    valid A-ASSOCIATE-RQ followed by the bytes, draining events so command reassembly,
///    `CommandSet::decode` and the data set fragment path all run.
///
/// None of them may panic or hang; what `parse_pdata` accepts must account for every byte
/// (`check_pdvs`). Returns whether the bytes parsed as a P-DATA-TF body and how many DIMSE
/// events the acceptors produced. Runs on a runtime of its own: call it outside any tokio
/// runtime.
pub fn check_pdata(data: &[u8]) -> (bool, usize) {
    let parsed = match parse_pdata(Bytes::copy_from_slice(data)) {
        Ok(pdvs) => {
            check_pdvs(&pdvs, data.len());
            true
        }
        Err(_) => false,
    };
    let events = runtime().block_on(async {
        let mut reader = PduReader::new(data, 16384, Duration::from_secs(2));
        while let Ok(frame) = reader.read().await {
            if let Frame::PData(pdvs) = frame {
                assert!(!pdvs.is_empty());
            }
        }
        serve_bytes(&[], data).await + serve_bytes(associate_rq(), data).await
    });
    (parsed, events)
}

/// One tokio runtime for every input (a worker for what the acceptor spawns, timers on).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A valid A-ASSOCIATE-RQ proposing Verification (1), CT Image Storage (3) and Study Root
/// C-FIND (5), encoded once.
fn associate_rq() -> &'static [u8] {
    static RQ: OnceLock<Vec<u8>> = OnceLock::new();
    RQ.get_or_init(|| {
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
    })
}

/// Accepts everything, in the first proposed transfer syntax.
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

/// A P-DATA-TF body that parses holds at least one PDV, and its PDVs (6 bytes of header
/// each) cover the body exactly.
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
    // Every event consumes input, so this ends; the bound is a guard against a bug.
    for _ in 0..=data.len() {
        match assoc.next_event().await {
            Ok(Event::Command { .. }) | Ok(Event::Data(_)) => events += 1,
            _ => break,
        }
    }
    events
}
