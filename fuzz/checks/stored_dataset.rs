// Checks of the `stored_dataset` fuzz target, shared by `fuzz/fuzz_targets/stored_dataset.rs`
// and the corpus replay in `tests/fuzz_corpus.rs` (both `include!` this file, so there is one
// copy of each check).

use beeldbrug::dicomweb::frames::PixelLayout;
use beeldbrug::dicomweb::json::{dataset_json, BulkData};
use beeldbrug::dicomweb::rendered::{render, RenderParams};
use beeldbrug::dicomweb::transcode::transcode_file;
use beeldbrug::dimse::dataset::{self, file_header, locate_pixel_data, open_stored, Extent};
use beeldbrug::dimse::sop::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use beeldbrug::store::ingest::{store_blob, Expected};
use beeldbrug::store::BlobStore;
use dicom_pixeldata::image::ImageFormat;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The transfer syntaxes a data set arrives in over DIMSE and STOW-RS uncompressed, and
/// those every conversion path produces.
const SYNTAXES: [&str; 2] = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];

/// Frames looked at per instance (an input may claim millions).
const FRAMES_LOOKED_AT: u32 = 4;

/// Arbitrary bytes as the data set of a received instance, once in each of [`SYNTAXES`]
/// (behind a Part 10 header, as a C-STORE or STOW-RS part becomes one):
/// 1. stored through the ingest check (`store::ingest::store_blob`, the path of C-STORE,
///    STOW-RS and PACS fills): a refusal leaves nothing in `tmp` or `blobs`; what is accepted
///    passes the structure check again from the store (`check_accepted`);
/// 2. what was accepted is retrieved through every conversion path, and what was refused is
///    put through the same paths as if it had been placed in the store by other means
///    (`convert_every_way`): transcoding to Explicit and Implicit VR Little Endian (WADO-RS,
///    and C-GET/C-MOVE sending to a peer that wants the other syntax), the metadata JSON,
///    the frames, the rendered image. None of them may panic, overflow the stack or hang;
///    any may fail.
///
/// Returns in how many syntaxes ingest accepted the data set. Runs on a runtime of its own:
/// call it outside any tokio runtime.
pub fn check_stored(data: &[u8]) -> usize {
    let mut accepted = 0;
    for ts in SYNTAXES {
        let dir = fresh_dir();
        let stored = runtime().block_on(store(&dir, data, ts));
        match stored {
            Some(path) => {
                check_accepted(&path);
                convert_every_way(&path);
                accepted += 1;
            }
            None => {
                assert_eq!(files_under(&dir.join("tmp")), 0, "refused, but left in tmp");
                assert_eq!(files_under(&dir.join("blobs")), 0, "refused, but stored");
                let raw = dir.join("placed.dcm");
                let mut file = file_header(CT_IMAGE_STORAGE, "1.2.3.4", ts, "FUZZ").unwrap();
                file.extend_from_slice(data);
                std::fs::write(&raw, file).expect("write the placed instance");
                convert_every_way(&raw);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    accepted
}

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Store `data` (a data set in `ts`) through ingest into a blob store under `dir`: the path
/// of the stored blob, or `None` when ingest refused it.
async fn store(dir: &Path, data: &[u8], ts: &str) -> Option<PathBuf> {
    let blobs = BlobStore::open(dir).await.expect("blob store");
    let mut blob = blobs.begin().await.expect("temp file");
    blob.write(&file_header(CT_IMAGE_STORAGE, "1.2.3.4", ts, "FUZZ").unwrap())
        .await
        .expect("write header");
    blob.write(data).await.expect("write data set");
    let stored = store_blob(&blobs, blob, Expected::default()).await.ok()?;
    Some(blobs.path(&stored.record.blob_key))
}

/// An accepted instance is whole: its data set passes the structure check from the store.
fn check_accepted(path: &Path) {
    if let Err(e) = locate_pixel_data(path) {
        panic!("accepted, but the stored file fails the structure check: {e}");
    }
}

/// Every conversion a stored instance goes through on retrieve. Errors are fine; what is
/// produced must be consistent with the file.
fn convert_every_way(path: &Path) {
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    for ts in SYNTAXES {
        let _ = transcode_file(path, ts);
    }
    if let Ok((obj, _)) = open_stored(path, Extent::UpToPixelData) {
        let _ = dataset_json(
            &obj,
            &BulkData {
                base: "http://x/bulkdata",
            },
            "",
        );
        if let Ok(layout) = PixelLayout::read(path, &obj) {
            for n in 1..=FRAMES_LOOKED_AT {
                let Ok(ranges) = layout.frame(n) else { break };
                for (offset, len) in ranges {
                    assert!(
                        offset.checked_add(len).is_some_and(|end| end <= file_len),
                        "frame {n} at {offset}+{len} lies outside the file of {file_len}"
                    );
                }
            }
        }
        // Rendering allocates what Rows x Columns x Samples x Frames announce before it
        // looks at the pixel data: keep that within what a fuzzer process may use.
        let number = |element| {
            obj.element(dicom_core::Tag(0x0028, element))
                .ok()
                .and_then(|e| e.to_int::<u64>().ok())
                .unwrap_or(1)
                .max(1)
        };
        let pixels = [0x0010, 0x0011, 0x0002, 0x0008]
            .into_iter()
            .try_fold(1u64, |acc, element| acc.checked_mul(number(element)));
        if pixels.is_some_and(|p| p <= 1 << 22) {
            let params = RenderParams {
                window: None,
                viewport: None,
                quality: 90,
            };
            let _ = render(path, 1, &params, false, ImageFormat::Png);
        }
    }
    // C-GET/C-MOVE to a peer that accepted only the other syntax: whole data set re-encoded.
    if let Ok((obj, _)) = open_stored(path, Extent::Whole) {
        for ts in SYNTAXES {
            let _ = dataset::encode(&obj, ts);
        }
    }
}

/// A directory of its own for one input.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("beeldbrug-fuzz-stored-{}-{n}", std::process::id()))
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                1
            }
        })
        .sum()
}

/// One tokio runtime for every input (ingest runs its check on the blocking pool).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}
