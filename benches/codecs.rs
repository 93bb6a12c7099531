//! Codec timings for `benches/codecs.sh` (issue 13): beeldbrug's one decode/encode entry,
//! `transcode::transcode_file`, on given files, in process (no start-up, the file read from
//! the page cache). Run with `cargo bench --bench codecs -- <mode> REPS FILE...`:
//!
//! - `decode REPS FILE...`: each file into Explicit VR LE, REPS times; prints per file the
//!   median milliseconds and decoded MB/s (the Explicit VR LE output's bytes).
//! - `encode REPS TS FILE...`: each file into TS (e.g. JPEG-LS lossless); prints the median
//!   milliseconds, the input and output bytes.
//!
//! Output lines are tab-separated: `mode  file  median_ms  mb_per_s  in_bytes  out_bytes`.

use beeldbrug::transcode::{transcode_file, EXPLICIT_VR_LE};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (mode, reps, rest) = match args.as_slice() {
        [mode, reps, rest @ ..] => (mode.as_str(), reps.parse::<usize>().expect("REPS"), rest),
        _ => {
            eprintln!("usage: codecs decode REPS FILE... | codecs encode REPS TS FILE...");
            return;
        }
    };
    let (target, files) = match mode {
        "decode" => (EXPLICIT_VR_LE.to_string(), rest),
        "encode" => (rest[0].clone(), &rest[1..]),
        _ => panic!("mode: decode or encode"),
    };
    for file in files {
        let path = std::path::Path::new(file);
        let in_bytes = std::fs::metadata(path).expect("file").len();
        let mut times = Vec::with_capacity(reps);
        let mut out_bytes = 0;
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            let out = transcode_file(path, &target).unwrap_or_else(|e| panic!("{file}: {e}"));
            times.push(start.elapsed().as_secs_f64());
            out_bytes = out.len();
        }
        let ms = median(times) * 1000.0;
        let mb = if mode == "decode" {
            out_bytes
        } else {
            in_bytes as usize
        } as f64
            / 1e6;
        println!(
            "{mode}\t{file}\t{ms:.2}\t{:.1}\t{in_bytes}\t{out_bytes}",
            mb / (ms / 1000.0)
        );
    }
}
