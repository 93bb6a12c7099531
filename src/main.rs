//! The `beeldbrug` binary: parse the command line, set up logging, run. `anyhow` lives here only.

use clap::Parser;

/// jemalloc, not glibc's malloc: under `benches/load.sh` glibc's per-thread arenas kept
/// +91 MiB after the load (one node, 200 clients), jemalloc +43 MiB, mimalloc +40 MiB with
/// twice the idle RSS and a higher peak (docs/performance.md, "Load").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match beeldbrug::oplog::LogFormat::from_env() {
        Ok(format) => beeldbrug::oplog::init(format),
        Err(e) => {
            eprintln!("beeldbrug: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let cli = beeldbrug::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Defence in depth only: data sets are checked before dicom-rs parses them (nesting
        // at most `dataset::MAX_SEQUENCE_DEPTH`), but its parser, encoder and drop recurse
        // per sequence level; 8 MiB (not 2) for workers and blocking threads keeps headroom.
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beeldbrug: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(beeldbrug::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beeldbrug: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
