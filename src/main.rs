//! The `beeldbrug` binary: parse the command line, set up logging, run. `anyhow` lives here only.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BEELDBRUG_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
