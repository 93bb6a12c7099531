//! Helpers for gateway-mode tests: `[pacs]` configuration, data sets of retrieved parts,
//! and the audit trail.

use super::http::{multipart_parts, HttpResponse};
use std::collections::BTreeMap;

/// `[pacs]` for a PACS on loopback, without the start-up probe.
pub fn pacs_toml(ae: &str, port: u16, retrieve: &str, extra: &str) -> String {
    format!(
        "[pacs]\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\nretrieve = \"{retrieve}\"\n\
         probe_at_start = false\nforward_stow = false\n{extra}\n"
    )
}

/// The data set of a Part 10 file (what follows the meta group) and its SOP Instance UID.
pub fn dataset_of(part10: &[u8]) -> (String, Vec<u8>) {
    assert_eq!(&part10[128..132], b"DICM", "not Part 10");
    // (0002,0000) UL, explicit VR: tag 4, VR 2, length 2, value 4.
    let group_len = u32::from_le_bytes(part10[140..144].try_into().unwrap()) as usize;
    let start = 144 + group_len;
    let meta = &part10[132..start];
    // (0002,0003) Media Storage SOP Instance UID.
    let at = meta
        .windows(4)
        .position(|w| w == [0x02, 0x00, 0x03, 0x00])
        .expect("media storage SOP instance UID");
    let len = u16::from_le_bytes(meta[at + 6..at + 8].try_into().unwrap()) as usize;
    let uid = String::from_utf8_lossy(&meta[at + 8..at + 8 + len])
        .trim_end_matches(['\0', ' '])
        .to_string();
    (uid, part10[start..].to_vec())
}

/// The transfer syntax a Part 10 file's meta group names (0002,0010).
pub fn syntax_of(part10: &[u8]) -> String {
    let meta = &part10[132..];
    let at = meta
        .windows(4)
        .position(|w| w == [0x02, 0x00, 0x10, 0x00])
        .expect("transfer syntax UID");
    let len = u16::from_le_bytes(meta[at + 6..at + 8].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&meta[at + 8..at + 8 + len])
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// Data sets by SOP Instance UID.
pub fn datasets(parts: &[Vec<u8>]) -> BTreeMap<String, Vec<u8>> {
    parts.iter().map(|p| dataset_of(p)).collect()
}

pub const AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

/// WADO-RS `path` with `accept`; 200 expected.
pub async fn wado(port: u16, path: &str, accept: &str) -> (HttpResponse, Vec<Vec<u8>>) {
    let r = super::http::get(port, path, accept).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    let parts = multipart_parts(&r);
    (r, parts)
}

/// Details of the audit events of one operation, oldest first.
pub async fn audit_details(
    ctx: &beeldbrug::server::Context,
    operation: &str,
) -> Vec<(String, String)> {
    ctx.index
        .audit_events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.operation == operation)
        .map(|e| (e.outcome, e.detail))
        .collect()
}

/// Whether `study` becomes complete in the cache within a few seconds (the cache records a
/// fetched study as complete once it is durable, just after the last part went out).
pub async fn becomes_complete(ctx: &beeldbrug::server::Context, study: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if matches!(ctx.index.cached_study(study).await, Ok(Some(s)) if s.complete) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
