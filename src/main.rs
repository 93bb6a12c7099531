//! The `beeldbrug` binary: parse the command line, set up logging and traces, run. `anyhow`
//! lives here only.

use clap::Parser;

/// jemalloc, not glibc's malloc: under `benches/load.sh` glibc's per-thread arenas kept
/// +91 MiB after the load (one node, 200 clients), jemalloc +43 MiB, mimalloc +40 MiB with
/// twice the idle RSS and a higher peak (docs/performance.md, "Load").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
