//! The cost of TLS record protection on its own, for `benches/tls.sh` (issue 16 section 6):
//! what a server cannot avoid paying per byte it sends over TLS, measured in process without
//! sockets, on one thread. Run with `cargo bench --bench tls_records -- <mode> MB [ARGS]`:
//!
//! - `aead MB`: ring's AES-128-GCM and AES-256-GCM (`seal_in_place_separate_tag`) over
//!   16 KiB records (RFC 8446 5.2: the largest TLS 1.3 record), MB megabytes: the cipher
//!   alone, no copy, no framing.
//! - `rustls MB WRITE LIMIT`: a rustls `ServerConnection` (beeldbrug's provider and suite
//!   order, so TLS 1.3 with AES-128-GCM) after an in-memory handshake, MB megabytes of
//!   application data written in WRITE-byte calls, each followed by `write_tls` into a sink,
//!   with the connection's buffer limit LIMIT bytes (`set_buffer_limit`; rustls' default is
//!   65536): the cipher plus rustls' record framing, its copy into the record buffer and
//!   its allocation per record, as the listener pays them (without the socket).
//!
//! Output lines are tab-separated: `mode  what  MB  seconds  cpu_seconds  MB/s  cpu_s_per_GB`
//! (cpu from `/proc/self/stat`, 10 ms ticks; wall and cpu agree on an idle core).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// The largest TLS plaintext record (RFC 8446 5.1).
const RECORD: usize = 16 * 1024;

/// This process's user + system CPU seconds (`/proc/self/stat` fields 14 and 15).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the `)`: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn report(mode: &str, what: &str, bytes: usize, wall: f64, cpu: f64) {
    let mb = bytes as f64 / 1e6;
    println!(
        "{mode}\t{what}\t{mb:.0}\t{wall:.3}\t{cpu:.2}\t{:.0}\t{:.3}",
        mb / wall,
        cpu / (bytes as f64 / 1e9)
    );
}

fn aead_mode(total: usize) {
    for (name, alg) in [
        ("AES-128-GCM", &aead::AES_128_GCM),
        ("AES-256-GCM", &aead::AES_256_GCM),
    ] {
        let key = vec![7u8; alg.key_len()];
        let key = LessSafeKey::new(UnboundKey::new(alg, &key).expect("key"));
        let mut record = vec![0x5au8; RECORD];
        let records = total / RECORD;
        let (t0, c0) = (Instant::now(), cpu_seconds());
        for seq in 0..records as u64 {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&seq.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from([23u8, 3, 3, 0x40, 0x11]),
                    &mut record,
                )
                .expect("seal");
            let _ = std::hint::black_box(tag);
        }
        report(
            "aead",
            name,
            records * RECORD,
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0,
        );
    }
}

/// A server and a client connection with the handshake done in memory.
fn connected() -> (rustls::ServerConnection, rustls::ClientConnection) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = beeldbrug::trust::tls::provider();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
    let mut c = rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
        .expect("client");
    while s.is_handshaking() || c.is_handshaking() {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server read");
        }
        s.process_new_packets().expect("server process");
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read");
        }
        c.process_new_packets().expect("client process");
    }
    (s, c)
}

fn rustls_mode(total: usize, write: usize, limit: usize) {
    let (mut server, _client) = connected();
    let suite = server
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    server.set_buffer_limit(Some(limit));
    let data = vec![0x5au8; write];
    let mut sink = std::io::sink();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut left = total;
    while left > 0 {
        let mut chunk = &data[..write.min(left)];
        while !chunk.is_empty() {
            let n = server.writer().write(chunk).expect("write");
            chunk = &chunk[n..];
            while server.wants_write() {
                server.write_tls(&mut sink).expect("write_tls");
            }
        }
        left -= write.min(left);
    }
    report(
        "rustls",
        &format!("{suite} write={write} limit={limit}"),
        total,
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0,
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let total = num(1, 1000) * 1_000_000;
    match args.first().map(String::as_str) {
        Some("aead") => aead_mode(total),
        Some("rustls") => rustls_mode(total, num(2, 1 << 20), num(3, 65536)),
        _ => eprintln!("usage: tls_records aead MB | tls_records rustls MB WRITE LIMIT"),
    }
}
