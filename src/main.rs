//! The `beeldbrug` binary: parse the command line, set up logging and traces, run. `anyhow`
//! lives here only.

use clap::Parser;

/// jemalloc, not glibc's malloc: under `benches/load.sh` glibc's per-thread arenas kept
/// +91 MiB after the load (one node, 200 clients), jemalloc +43 MiB, mimalloc +40 MiB with
/// twice the idle RSS and a higher peak (docs/performance.md, "Load").
#[global_allocator]
static GLOBAL: NullTolerantJemalloc = NullTolerantJemalloc(tikv_jemallocator::Jemalloc);

/// jemalloc that ignores a deallocation of a null pointer, as glibc's `free(NULL)` does.
/// The `openjp2` port (0.6.1, `tcd.rs` `opj_tcd_code_block_dec_deallocate`) hands every code
/// block's `decoded_data` to `dealloc`, null for a block it never decoded: harmless with the
/// system allocator, but jemalloc's sized free of a null pointer corrupts its state, and the
/// next allocation anywhere fails ("memory allocation of 8 bytes failed", the process
/// aborts). A 512 x 512 JPEG 2000 retrieve did so at its first instance
/// (docs/performance.md, "Issue 13's benchmark in one run").
struct NullTolerantJemalloc(tikv_jemallocator::Jemalloc);

// SAFETY: every call is passed on to jemalloc unchanged, except a deallocation of a null
// pointer, which allocated nothing and so has nothing to free.
unsafe impl std::alloc::GlobalAlloc for NullTolerantJemalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if !ptr.is_null() {
            unsafe { self.0.dealloc(ptr, layout) }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

fn main() -> std::process::ExitCode {
    let cli = beeldbrug::cli::Cli::parse();
    // `serve` reads its configuration before the subscriber is installed: `[log] format`
    // and `[telemetry]` shape it. A bad configuration is reported like any error.
    let config = match &cli.command {
        beeldbrug::cli::Command::Serve { config } => {
            match beeldbrug::config::Config::load(config.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("beeldbrug: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let configured = config.as_ref().map(|c| c.log.format).unwrap_or_default();
    let format = match beeldbrug::telemetry::LogFormat::from_env_or(configured) {
        Ok(format) => format,
        Err(e) => {
            eprintln!("beeldbrug: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
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
    let telemetry = config.as_ref().map(|c| &c.telemetry);
    let telemetry = match beeldbrug::telemetry::init(format, telemetry, runtime.handle()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("beeldbrug: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(beeldbrug::cli::run(cli, config));
    // The spans still queued go out before the runtime their exports run on stops.
    runtime.block_on(async {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beeldbrug: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
