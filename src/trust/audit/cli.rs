//! `beeldbrug audit`: read the audit trail per patient (BSN) and verify its hash chain.
//! Reading the trail is itself recorded.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Configuration file (TOML) on top of the embedded defaults: names the index.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The patient (BSN) whose records to list.
    #[arg(long)]
    pub bsn: Option<String>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("audit: not built yet")
}
