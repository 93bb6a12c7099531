//! `[pacs]` and `[cache]`: the settings of gateway mode. The types live in `config/pacs.rs`
//! (the configuration imports no module it configures); they are named here too.

pub use crate::config::pacs::{CacheConfig, PacsConfig, RetrieveMode};
