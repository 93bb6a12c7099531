//! `beeldbrug mitz-sim`: a small, faithful simulator of the Mitz closed-question interface
//! (XACML decision query over SOAP), answering from a consent table. For tests and demos.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Consent table (TOML).
    #[arg(long)]
    pub consents: PathBuf,
}

pub async fn run(args: SimulatorArgs) -> anyhow::Result<()> {
    anyhow::bail!("mitz-sim: not built yet ({})", args.listen)
}
