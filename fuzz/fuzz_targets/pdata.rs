//! P-DATA-TF and PDU framing on arbitrary bytes, three ways:
//! 1. `parse_pdata` on the bytes as a P-DATA-TF body;
//! 2. `PduReader` reading PDUs from the bytes as a stream;
//! 3. an acceptor (`negotiate::accept`) fed the bytes as the whole connection, and fed a
//!    valid A-ASSOCIATE-RQ followed by the bytes, draining events so command reassembly,
//!    `CommandSet::decode` and the data set fragment path all run.
//!
//! None of them may panic or hang; what `parse_pdata` accepts must account for every byte.
#![no_main]

use beeldbrug::dimse::negotiate::{accept, AcceptPolicy, LinkOptions, Refusal};
use beeldbrug::dimse::pdu::{parse_pdata, Frame, PduReader, Pdv};
use beeldbrug::dimse::Event;
use bytes::Bytes;
use dicom_ul::pdu::{
    write_pdu, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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

fn check_pdvs(pdvs: &[Pdv], body_len: usize) {
    assert!(!pdvs.is_empty(), "P-DATA-TF without PDVs accepted");
    let total: usize = pdvs.iter().map(|p| 6 + p.data.len()).sum();
    assert_eq!(total, body_len, "PDVs do not account for every byte");
}

/// Run an acceptor on a connection whose whole input is `prefix` + `data`.
async fn serve_bytes(prefix: &[u8], data: &[u8]) {
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
        return;
    };
    // Every event consumes input, so this ends; the bound is a guard against a bug.
    for _ in 0..=data.len() {
        match assoc.next_event().await {
            Ok(Event::Command { .. }) | Ok(Event::Data(_)) => continue,
            _ => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(pdvs) = parse_pdata(Bytes::copy_from_slice(data)) {
        check_pdvs(&pdvs, data.len());
    }
    runtime().block_on(async {
        let mut reader = PduReader::new(data, 16384, Duration::from_secs(2));
        while let Ok(frame) = reader.read().await {
            if let Frame::PData(pdvs) = frame {
                assert!(!pdvs.is_empty());
            }
        }
        serve_bytes(&[], data).await;
        serve_bytes(associate_rq(), data).await;
    });
});
