//! Association slots under idle connections (issue 18, item 3), against the real listener.
//!
//! A connection that has not completed its A-ASSOCIATE-RQ holds no association slot, is
//! closed by the ARTIM timer (PS3.8 9.1.5; `dimse.artim_secs`, one deadline from accept,
//! the DICOM TLS handshake included), and counts against `dimse.max_pending` and
//! `dimse.max_pending_per_address` (beyond them the oldest pending connection is closed). An
//! established association counts against `dimse.max_associations` and
//! `dimse.max_associations_per_address`. So a known PACS is served at once while others hold
//! idle or trickling connections.
//!
//! Linux answers on all of 127.0.0.0/8, so other "addresses" connect from 127.0.0.2 and up.

mod common;

use beeldbrug::core::Selection;
use beeldbrug::dimse::negotiate::ProposedContext;
use beeldbrug::dimse::scu::{self, ScuOptions};
use beeldbrug::dimse::sop;
use common::{dcmtk, generate, Gateway};
use dicom_ul::pdu::{write_pdu, AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single wait on the gateway.
const WAIT: Duration = Duration::from_secs(20);
/// What the issue asks of a known PACS while the listener is under siege.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// `dimse.artim_secs` in the tests that wait for it.
const ARTIM: Duration = Duration::from_secs(2);

/// A TCP connection to the gateway from `source` (an address on loopback).
async fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .expect("bind the source address");
    let stream = tokio::time::timeout(
        WAIT,
        socket.connect(format!("127.0.0.1:{port}").parse().unwrap()),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// An A-ASSOCIATE-RQ for verification, encoded by dicom-ul.
fn associate_rq() -> Vec<u8> {
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "SLOTS".to_string(),
        called_ae_title: "BEELDBRUG".to_string(),
        application_context_name: "1.2.840.10008.3.1.1.1".to_string(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: sop::VERIFICATION.to_string(),
            transfer_syntaxes: vec![sop::IMPLICIT_VR_LE.to_string()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.9.7433.1".to_string()),
        ],
    };
    let mut buf = Vec::new();
    write_pdu(&mut buf, &Pdu::AssociationRQ(rq)).expect("encode A-ASSOCIATE-RQ");
    buf
}

/// The gateway's answer to an A-ASSOCIATE-RQ sent from `source`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// A-ASSOCIATE-RJ: result, source, reason (PS3.8 9.3.4).
    Rejected(u8, u8, u8),
}

/// Associate from `source` over raw TCP; the stream stays open (the association held).
async fn associate_from(source: &str, port: u16) -> (TcpStream, Answer) {
    let mut stream = connect_from(source, port).await;
    stream.write_all(&associate_rq()).await.unwrap();
    let mut header = [0u8; 6];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("no answer to A-ASSOCIATE-RQ")
        .expect("an answer to A-ASSOCIATE-RQ");
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, stream.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    let answer = match header[0] {
        0x02 => Answer::Accepted,
        0x03 => Answer::Rejected(body[1], body[2], body[3]),
        other => panic!("expected A-ASSOCIATE-AC or -RJ, got PDU type 0x{other:02X}"),
    };
    (stream, answer)
}

/// Transient, service provider (presentation), local limit exceeded (PS3.8 Table 9-21).
const LOCAL_LIMIT_EXCEEDED: Answer = Answer::Rejected(2, 3, 2);

/// How long after `since` the gateway closed `stream` (end of stream or reset); `None` when
/// it was still open after `within`.
async fn closed_within(
    stream: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::from_std(since + within);
    match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0)) | Ok(Err(_)) => Some(since.elapsed()),
        Ok(Ok(_)) => panic!("the gateway sent something to a connection that sent no request"),
    }
}

/// A connection that sends a valid A-ASSOCIATE-RQ one byte every `every`, from `source`.
/// The task ends when the gateway closes the connection, with the time that took.
fn trickle(source: &'static str, port: u16, every: Duration) -> JoinHandle<Duration> {
    tokio::spawn(async move {
        let started = Instant::now();
        let stream = connect_from(source, port).await;
        let (mut reader, mut writer) = stream.into_split();
        let send = async move {
            for byte in associate_rq() {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(every).await;
            }
            std::future::pending::<()>().await
        };
        let mut buf = [0u8; 512];
        tokio::select! {
            _ = send => unreachable!(),
            read = reader.read(&mut buf) => {
                assert!(
                    !matches!(read, Ok(n) if n > 0),
                    "the gateway answered a request that never completed"
                );
            }
        }
        started.elapsed()
    })
}

/// Run a DCMTK tool off the runtime's workers; its success, output and how long it took.
async fn timed_dcmtk(tool: &'static str, args: Vec<String>) -> (bool, String, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dcmtk(tool, &args);
        let took = started.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && !text.contains("E:"), text, took)
    })
    .await
    .expect("DCMTK tool")
}

fn echoscu_args(port: u16) -> Vec<String> {
    ["-to", "5", "-aet", "PACS", "-aec", "BEELDBRUG", "127.0.0.1"]
        .iter()
        .map(|s| s.to_string())
        .chain([port.to_string()])
        .collect()
}

fn opts(port: u16) -> ScuOptions {
    ScuOptions::new("127.0.0.1", port, "PACS", "BEELDBRUG")
}

/// The case, with the default limits: 25 silent and 25 trickling (one byte a second)
/// connections from the same machine, then DCMTK's echoscu and storescu are each served
/// within a second.
#[tokio::test(flavor = "multi_thread")]
async fn a_known_pacs_is_served_while_fifty_connections_idle_or_trickle() {
    let gw = Gateway::start("").await;
    let mut silent = Vec::new();
    for _ in 0..25 {
        silent.push(connect_from("127.0.0.1", gw.port).await);
    }
    let trickling: Vec<_> = (0..25)
        .map(|_| trickle("127.0.0.1", gw.port, Duration::from_secs(1)))
        .collect();
    // Every connection accepted, every trickler a byte or two in.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (ok, out, took) = timed_dcmtk("echoscu", echoscu_args(gw.port)).await;
    assert!(ok, "echoscu while 50 connections are held: {out}");
    assert!(took < SERVED_WITHIN, "echoscu took {took:?}");

    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path(), false);
    let file = &files[0];
    let args = ["-aet", "PACS", "-aec", "BEELDBRUG", "127.0.0.1"]
        .iter()
        .map(|s| s.to_string())
        .chain([gw.port.to_string(), file.path.display().to_string()])
        .collect();
    let (ok, out, took) = timed_dcmtk("storescu", args).await;
    assert!(ok, "storescu while 50 connections are held: {out}");
    assert!(took < SERVED_WITHIN, "storescu took {took:?}");
    let stored = gw
        .context()
        .index
        .count_instances(&Selection {
            sop_instance_uids: vec![file.sop_uid.clone()],
            ..Default::default()
        })
        .await
        .expect("index lookup");
    assert_eq!(stored, 1, "the C-STORE was acknowledged but not stored");

    drop(silent);
    for t in trickling {
        t.abort();
    }
    gw.stop().await;
}

/// Silent connections and connections that trickle a request (faster than any per-PDU
/// timeout would notice) are closed once the ARTIM time has passed since they connected.
#[tokio::test(flavor = "multi_thread")]
async fn connections_without_a_whole_associate_rq_are_closed_at_the_artim_time() {
    let gw = Gateway::start(&format!("[dimse]\nartim_secs = {}", ARTIM.as_secs())).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect_from("127.0.0.1", gw.port).await);
    }
    let trickling: Vec<_> = (0..3)
        .map(|_| trickle("127.0.0.1", gw.port, Duration::from_millis(200)))
        .collect();
    let bound = ARTIM + Duration::from_millis(1500);
    for (i, stream) in silent.iter_mut().enumerate() {
        let took = closed_within(stream, started, WAIT)
            .await
            .unwrap_or_else(|| panic!("silent connection {i} still open after {WAIT:?}"));
        assert!(
            took >= ARTIM - Duration::from_millis(100) && took < bound,
            "silent connection {i} closed after {took:?}"
        );
    }
    for (i, t) in trickling.into_iter().enumerate() {
        let took = tokio::time::timeout(WAIT, t)
            .await
            .unwrap_or_else(|_| panic!("trickling connection {i} still open after {WAIT:?}"))
            .unwrap();
        assert!(
            took >= ARTIM - Duration::from_millis(100) && took < bound,
            "trickling connection {i} closed after {took:?}"
        );
    }
    let (ok, out, _) = timed_dcmtk("echoscu", echoscu_args(gw.port)).await;
    assert!(ok, "{out}");
    gw.stop().await;
}

/// On the DICOM TLS listener the handshake counts against the same deadline: a client that
/// never starts it, and one (openssl s_client) that completes it and then sends nothing, are
/// both closed at the ARTIM time after connecting.
#[tokio::test(flavor = "multi_thread")]
async fn on_dicom_tls_the_handshake_counts_against_artim() {
    let pki = common::pki::Pki::new();
    let gw = Gateway::start(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\ndimse_listen = \"127.0.0.1:0\"\n\
         [dimse]\nartim_secs = {}\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        ARTIM.as_secs()
    ))
    .await;
    let tls_port = gw
        .running
        .as_ref()
        .unwrap()
        .dimse_tls_addr
        .expect("DICOM TLS listener")
        .port();
    let bound = ARTIM + Duration::from_millis(1500);

    let started = Instant::now();
    let mut silent = connect_from("127.0.0.1", tls_port).await;
    let ca = pki.ca_file.clone();
    let s_client = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
            .arg(&ca)
            .args(["-connect", &format!("127.0.0.1:{tls_port}")])
            .stdin(Stdio::piped()) // kept open: the client waits, sending nothing
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        let status = child.wait().expect("openssl s_client");
        (started.elapsed(), status)
    });

    let took = closed_within(&mut silent, started, WAIT)
        .await
        .expect("a connection without a TLS handshake is still open");
    assert!(
        took >= ARTIM - Duration::from_millis(100) && took < bound,
        "closed after {took:?}"
    );
    let (took, _) = tokio::time::timeout(WAIT, s_client)
        .await
        .expect("a TLS client that sends no A-ASSOCIATE-RQ is still connected")
        .unwrap();
    assert!(
        took >= ARTIM - Duration::from_millis(100) && took < bound,
        "TLS client closed after {took:?}"
    );
    gw.stop().await;
}

/// One address holds at most `max_associations_per_address` associations; other addresses
/// still get the remaining slots, up to `max_associations`.
#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_association_slot() {
    let gw =
        Gateway::start("[dimse]\nmax_associations = 3\nmax_associations_per_address = 2").await;
    let verification = [ProposedContext {
        abstract_syntax: sop::VERIFICATION.into(),
        transfer_syntaxes: scu::native_syntaxes(),
        we_are_scp: false,
    }];
    let first = scu::connect(&opts(gw.port), &verification)
        .await
        .expect("first association");
    let (second, answer) = associate_from("127.0.0.1", gw.port).await;
    assert_eq!(answer, Answer::Accepted);
    let (_, answer) = associate_from("127.0.0.1", gw.port).await;
    assert_eq!(
        answer, LOCAL_LIMIT_EXCEEDED,
        "a third from the same address"
    );

    let (other, answer) = associate_from("127.0.0.2", gw.port).await;
    assert_eq!(answer, Answer::Accepted, "another address gets a slot");
    let (_, answer) = associate_from("127.0.0.3", gw.port).await;
    assert_eq!(answer, LOCAL_LIMIT_EXCEEDED, "beyond max_associations");

    // A released association gives its slot back to its address.
    tokio::time::timeout(WAIT, first.release())
        .await
        .unwrap()
        .expect("release");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, answer) = associate_from("127.0.0.1", gw.port).await;
        if answer == Answer::Accepted {
            break;
        }
        assert!(Instant::now() < deadline, "no slot after a release");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Closed, so that the stop need not wait for them.
    drop((second, other));
    gw.stop().await;
}

/// Beyond `max_pending_per_address` the oldest pending connection of that address is closed
/// (at once, not at the ARTIM time), other addresses' are kept; beyond `max_pending` the
/// oldest of all is closed. A real client from a crowded address is still served.
#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_half_open_connections_make_room() {
    let gw = Gateway::start("[dimse]\nmax_pending = 6\nmax_pending_per_address = 4").await;
    let started = Instant::now();
    let mut crowded = Vec::new();
    for _ in 0..4 {
        crowded.push(connect_from("127.0.0.2", gw.port).await);
    }
    let mut other = Vec::new();
    for _ in 0..2 {
        other.push(connect_from("127.0.0.3", gw.port).await);
    }
    // Two more from the crowded address: its two oldest go.
    for _ in 0..2 {
        crowded.push(connect_from("127.0.0.2", gw.port).await);
    }
    let soon = Duration::from_secs(1);
    for (i, stream) in crowded.iter_mut().enumerate().take(2) {
        assert!(
            closed_within(stream, started, soon).await.is_some(),
            "the oldest pending connection {i} of a crowded address is still open"
        );
    }
    let glance = Duration::from_millis(200);
    for stream in crowded.iter_mut().skip(2).chain(other.iter_mut()) {
        assert!(
            closed_within(stream, Instant::now(), glance)
                .await
                .is_none(),
            "a newer pending connection, or another address's, was closed"
        );
    }
    // Six pending now; a seventh from a fresh address closes the oldest of all.
    let started = Instant::now();
    let mut fresh = connect_from("127.0.0.4", gw.port).await;
    assert!(
        closed_within(&mut crowded[2], started, soon)
            .await
            .is_some(),
        "beyond max_pending the oldest pending connection is still open"
    );
    assert!(closed_within(&mut fresh, Instant::now(), glance)
        .await
        .is_none());
    // A real client from the crowded address is served at once.
    let mut more = Vec::new();
    for _ in 0..4 {
        more.push(connect_from("127.0.0.1", gw.port).await);
    }
    let (ok, out, took) = timed_dcmtk("echoscu", echoscu_args(gw.port)).await;
    assert!(ok, "{out}");
    assert!(took < SERVED_WITHIN, "echoscu took {took:?}");
    gw.stop().await;
}
