//! Codec timings for `benches/codecs.sh` (issue 13): beeldbrug's one decode/encode entry,
//! `transcode::transcode_file`, on given files, in process (no start-up, the file read from
//! the page cache). Run with `cargo bench --bench codecs -- <mode> REPS FILE...`:
//!
//! - `decode REPS FILE...`: each file into Explicit VR LE, REPS times; prints per file the
//!   median milliseconds and decoded MB/s (the Explicit VR LE output's bytes).
//! - `decode-dicom-rs REPS FILE...`: the same through the path `transcode_file` took before
//!   our own decoders (commit `8a60c4c`): the structure check (a deflated data set inflated
//!   twice), the parse (through dicom-rs's inflating reader), dicom-rs's `Transcode` into
//!   Explicit VR LE (its registered decoders, the pixels as 16-bit values) and `write_all`:
//!   the base to compare with, in the same binary and run.
//! - `encode REPS TS FILE...`: each file into TS (e.g. JPEG-LS lossless); prints the median
//!   milliseconds, the input and output bytes.
//!
//! Output lines are tab-separated: `mode  file  median_ms  mb_per_s  in_bytes  out_bytes
//! median_cpu_ms`, the last the CPU time of the thread (`/proc/thread-self/schedstat`): on a
//! machine shared with other work, what the codec costs rather than what the scheduler gave.

use beeldbrug::dataset::{open_stored, Extent};
use beeldbrug::transcode::{check, transcode_file, EXPLICIT_VR_LE};
use dicom_encoding::TransferSyntaxIndex;
use std::path::Path;
use std::time::Instant;

/// Nanoseconds this thread has run on a CPU (Linux schedstat), 0 elsewhere.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The decode path before our decoders (see the module comment).
fn decode_dicom_rs(path: &Path) -> Result<Vec<u8>, String> {
    use dicom_pixeldata::Transcode;
    let (mut obj, _) = open_stored(path, Extent::Whole).map_err(|e| e.to_string())?;
    let stored = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    check::pixel_data(&obj, &stored)?;
    let explicit = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(EXPLICIT_VR_LE)
        .ok_or("no Explicit VR LE")?;
    obj.transcode(explicit).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    obj.write_all(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (mode, reps, rest) = match args.as_slice() {
        [mode, reps, rest @ ..] => (mode.as_str(), reps.parse::<usize>().expect("REPS"), rest),
        _ => {
            eprintln!(
                "usage: codecs decode REPS FILE... | codecs decode-dicom-rs REPS FILE... \
                 | codecs encode REPS TS FILE..."
            );
            return;
        }
    };
    let (target, files) = match mode {
        "decode" | "decode-dicom-rs" => (EXPLICIT_VR_LE.to_string(), rest),
        "encode" => (rest[0].clone(), &rest[1..]),
        _ => panic!("mode: decode, decode-dicom-rs or encode"),
    };
    'files: for file in files {
        let path = Path::new(file);
        let in_bytes = std::fs::metadata(path).expect("file").len();
        let mut times = Vec::with_capacity(reps);
        let mut cpu = Vec::with_capacity(reps);
        let mut out_bytes = 0;
        for _ in 0..reps.max(1) {
            let cpu_start = thread_cpu_ns();
            let start = Instant::now();
            let out = if mode == "decode-dicom-rs" {
                match decode_dicom_rs(path) {
                    Ok(out) => out,
                    // The old path cannot decode every file (12-bit lossy JPEG): no base row.
                    Err(e) => {
                        eprintln!("{file}: the dicom-rs path fails: {e}");
                        continue 'files;
                    }
                }
            } else {
                transcode_file(path, &target).unwrap_or_else(|e| panic!("{file}: {e}"))
            };
            times.push(start.elapsed().as_secs_f64());
            cpu.push((thread_cpu_ns() - cpu_start) as f64 / 1e6);
            out_bytes = out.len();
        }
        let ms = median(times) * 1000.0;
        let mb = if mode == "encode" {
            in_bytes as usize
        } else {
            out_bytes
        } as f64
            / 1e6;
        let what = if mode == "encode" {
            format!("encode:{target}")
        } else {
            mode.to_string()
        };
        println!(
            "{what}\t{file}\t{ms:.2}\t{:.1}\t{in_bytes}\t{out_bytes}\t{:.2}",
            mb / (ms / 1000.0),
            median(cpu)
        );
    }
}
