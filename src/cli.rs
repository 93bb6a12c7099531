//! The command line: `serve` and the SCU tools a PACS engineer uses (`echo`, `find`,
//! `store`, `move`, `get`), plus `generate` for synthetic test studies.

use crate::config::Config;
use crate::dimse::dataset::{QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET};
use crate::dimse::scu::{self, ScuOptions};
use crate::dimse::{sop, status};
use crate::pacs::probe::{self, ProbeOptions, ProbeReport};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "beeldbrug",
    version,
    about = "DICOM gateway for Dutch national image exchange"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (DIMSE and HTTP listeners).
    Serve {
        /// Configuration file (TOML) on top of the embedded defaults.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// C-ECHO a peer.
    Echo(PeerArgs),
    /// C-FIND: query a peer and print the matches.
    Find {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        query: QueryArgs,
        /// Print JSON (one object per match) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// C-STORE files and directories (recursively) to a peer.
    Store {
        #[command(flatten)]
        peer: PeerArgs,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// C-MOVE: ask a peer to send instances to a destination AE.
    Move {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        query: QueryArgs,
        /// Destination AE title.
        #[arg(long)]
        dest: String,
    },
    /// C-GET: retrieve instances from a peer into a directory.
    Get {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        query: QueryArgs,
        /// Output directory.
        #[arg(long, short = 'o', default_value = ".")]
        out: PathBuf,
    },
    /// Write deterministic synthetic studies (CT, MR, DX, multi-frame, encapsulated).
    Generate(crate::testdata::GenerateArgs),
    /// Check what the PACS (`[pacs]`) supports and print an interoperability report.
    Probe {
        /// Configuration file (TOML) on top of the embedded defaults; must have `[pacs]`.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Study to query below STUDY level and retrieve from (default: one the PACS lists).
        #[arg(long)]
        study: Option<String>,
        /// Seconds each check may take.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Qualification self-test: run the conformance suite against another gateway (or this
    /// one) as a joining node is checked, and print a report per requirement (exit status 1
    /// when one fails).
    Selftest(SelftestArgs),
    /// Run a Mitz consent simulator (XACML closed and open questions, SOAP) for tests and demos.
    MitzSim(crate::trust::consent::simulator::SimulatorArgs),
    /// Read the audit trail per patient (BSN) and verify its hash chain.
    Audit(crate::trust::audit::cli::AuditArgs),
    /// Delete a study, series or instance from the store (index and files), audited.
    Delete(DeleteArgs),
    /// List the queue of instances forwarded to the PACS (gateway mode), newest first.
    Forward {
        /// Configuration file (TOML) on top of the embedded defaults: names the index.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Print JSON (one object per job) instead of a table.
        #[arg(long)]
        json: bool,
        /// Most jobs listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// The report's format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Debug, Clone, Args)]
pub struct SelftestArgs {
    /// Configuration file (TOML): our client certificate, CAs and CRLs, participant list,
    /// XUA issuer (`[trust.saml]`) and, for `--pacs`, the PACS.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The peer gateway's base URL (https://host:port); its ITI-38 endpoint is
    /// `<url>/xca/query` and RAD-75 / ITI-39 `<url>/xca/retrieve`, unless its participant
    /// entry or the options below name others.
    #[arg(long)]
    pub peer: String,
    #[arg(long)]
    pub query_url: Option<String>,
    #[arg(long)]
    pub retrieve_url: Option<String>,
    /// The peer's DICOMweb base URL (default: its participant entry's `dicomweb_url`).
    #[arg(long)]
    pub dicomweb_url: Option<String>,
    /// Also probe our PACS (`[pacs]`), as `beeldbrug probe` does.
    #[arg(long)]
    pub pacs: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The fictitious test patient (a BSN that passes the 11-test).
    #[arg(long, default_value = "999999990")]
    pub bsn: String,
    /// The test user the assertions name: UZI number, role (RoleCodeNL), purpose of use.
    #[arg(long, default_value = "900012345")]
    pub uzi: String,
    #[arg(long, default_value = "01.015")]
    pub role: String,
    #[arg(long, default_value = "TREAT")]
    pub purpose: String,
    /// Seconds each step may take.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// Audit record presence: the peer's audit trail API (default
    /// `<peer>/admin/api/audit`, a beeldbrug's console).
    #[arg(long)]
    pub audit_url: Option<String>,
    /// A client certificate and key the peer admits to its audit trail (an admin
    /// certificate of the peer's own, in its `trust.admin_certificates`).
    #[arg(long, requires = "audit_key")]
    pub audit_cert: Option<PathBuf>,
    #[arg(long, requires = "audit_cert")]
    pub audit_key: Option<PathBuf>,
    /// A file holding a bearer token of the peer's organisation with an admin role.
    #[arg(long)]
    pub audit_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Configuration file (TOML) on top of the embedded defaults: names the store and index.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Study Instance UID.
    #[arg(long)]
    pub study: String,
    /// Series Instance UID (within the study): delete only this series.
    #[arg(long)]
    pub series: Option<String>,
    /// SOP Instance UID (within the series): delete only this instance.
    #[arg(long, requires = "series")]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// Our (calling) AE title.
    #[arg(long = "aet", default_value = "BEELDBRUG_SCU")]
    pub aet: String,
    /// The peer's (called) AE title.
    #[arg(long = "aec", default_value = "BEELDBRUG")]
    pub aec: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 11112)]
    pub port: u16,
    /// Maximum PDU length we accept.
    #[arg(long, default_value_t = 262_144)]
    pub max_pdu: u32,
}

impl PeerArgs {
    pub fn options(&self) -> ScuOptions {
        let mut o = ScuOptions::new(&self.host, self.port, &self.aet, &self.aec);
        o.link.max_pdu = self.max_pdu;
        o
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Model {
    Study,
    Patient,
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Query/Retrieve level.
    #[arg(long, short = 'L', default_value = "STUDY")]
    pub level: String,
    /// Information model.
    #[arg(long, short = 'm', value_enum, default_value = "study")]
    pub model: Model,
    /// Keys as KEYWORD=value or gggg,eeee=value; an empty value asks for the attribute.
    #[arg(long = "key", short = 'k')]
    pub keys: Vec<String>,
    /// Specific Character Set for the identifier (default: ISO_IR 192 when a value is not ASCII).
    #[arg(long)]
    pub charset: Option<String>,
}

impl QueryArgs {
    fn sop_class(&self, service: &str) -> &'static str {
        match (self.model, service) {
            (Model::Study, "find") => sop::STUDY_ROOT_FIND,
            (Model::Study, "move") => sop::STUDY_ROOT_MOVE,
            (Model::Study, _) => sop::STUDY_ROOT_GET,
            (Model::Patient, "find") => sop::PATIENT_ROOT_FIND,
            (Model::Patient, "move") => sop::PATIENT_ROOT_MOVE,
            (Model::Patient, _) => sop::PATIENT_ROOT_GET,
        }
    }

    /// Build the identifier from `--level`, `--charset` and the `-k` keys.
    pub fn identifier(&self) -> anyhow::Result<InMemDicomObject> {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(self.level.to_uppercase()),
        ));
        let mut any_non_ascii = false;
        for key in &self.keys {
            let (name, value) = key.split_once('=').unwrap_or((key.as_str(), ""));
            let (tag, vr) = resolve_key(name)?;
            any_non_ascii |= !value.is_ascii();
            let value = if value.is_empty() {
                PrimitiveValue::Empty
            } else {
                PrimitiveValue::from(value)
            };
            obj.put(DataElement::new(tag, vr, value));
        }
        let charset = self
            .charset
            .clone()
            .or_else(|| any_non_ascii.then(|| "ISO_IR 192".to_string()));
        if let Some(cs) = charset {
            obj.put(DataElement::new(
                SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from(cs),
            ));
        }
        Ok(obj)
    }
}

/// `PatientName` or `0010,0010` → tag and VR from the standard dictionary.
pub fn resolve_key(name: &str) -> anyhow::Result<(Tag, VR)> {
    let name = name.trim();
    if let Some((g, e)) = name.split_once(',') {
        let tag = Tag(
            u16::from_str_radix(g.trim(), 16)?,
            u16::from_str_radix(e.trim(), 16)?,
        );
        let vr = StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.vr().relaxed())
            .unwrap_or(VR::LO);
        return Ok((tag, vr));
    }
    match StandardDataDictionary.by_name(name) {
        Some(entry) => Ok((entry.tag(), entry.vr().relaxed())),
        None => bail!("unknown attribute keyword {name:?}"),
    }
}

/// Run the command. `loaded` is `serve`'s configuration when the caller has read it already
/// (main.rs reads it first: the log format and telemetry are set up from it).
pub async fn run(cli: Cli, loaded: Option<Config>) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => match loaded {
            Some(loaded) => serve(loaded).await,
            None => serve(Config::load(config.as_deref())?).await,
        },
        Command::Echo(peer) => {
            let status = scu::echo(&peer.options()).await?;
            println!("C-ECHO {}: {}", peer.aec, status::describe(status));
            ensure_success(status)
        }
        Command::Find { peer, query, json } => find(&peer, &query, json).await,
        Command::Store { peer, paths } => store(&peer, &paths).await,
        Command::Move { peer, query, dest } => {
            let report = scu::move_study(
                &peer.options(),
                query.sop_class("move"),
                &query.identifier()?,
                &dest,
            )
            .await?;
            println!(
                "C-MOVE to {dest}: {} — {} completed, {} failed, {} warning",
                status::describe(report.status),
                report.completed,
                report.failed,
                report.warning
            );
            ensure_success(report.status)
        }
        Command::Get { peer, query, out } => {
            let (report, files) = scu::get(
                &peer.options(),
                query.sop_class("get"),
                &query.identifier()?,
                &out,
            )
            .await?;
            println!(
                "C-GET: {} — {} completed, {} failed, {} warning; {} files in {}",
                status::describe(report.status),
                report.completed,
                report.failed,
                report.warning,
                files.len(),
                out.display()
            );
            ensure_success(report.status)
        }
        Command::Forward {
            config,
            json,
            limit,
        } => forward_queue(config.as_deref(), json, limit).await,
        Command::Probe {
            config,
            json,
            study,
            timeout,
        } => probe(config.as_deref(), json, study, timeout).await,
        Command::Selftest(args) => selftest(args).await,
        Command::MitzSim(args) => crate::trust::consent::simulator::run(args).await,
        Command::Audit(args) => crate::trust::audit::cli::run(args).await,
        Command::Delete(args) => delete(args).await,
        Command::Generate(args) => {
            let files = crate::testdata::generate(&args)?;
            println!("wrote {} files under {}", files.len(), args.out.display());
            Ok(())
        }
    }
}

fn ensure_success(status: u16) -> anyhow::Result<()> {
    match status::category(status) {
        status::Category::Success | status::Category::Warning => Ok(()),
        _ => bail!("peer answered {}", status::describe(status)),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace_secs);
    let mut signals = ShutdownSignals::new()?;
    let running = crate::server::start(config).await?;
    println!(
        "beeldbrug: DIMSE on {}, HTTP on {}",
        running.dimse_addr, running.http_addr
    );
    signals.next().await;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new associations or requests; finishing those in flight \
         (a second SIGINT/SIGTERM stops at once)"
    );
    tokio::select! {
        drained = running.stop_within(grace) => {
            if drained {
                tracing::info!("shut down: everything in flight finished");
            }
        }
        _ = signals.next() => {
            // Everything acknowledged is durable already (fsync and commit come before
            // the answer); what is in flight was never acknowledged.
            tracing::warn!("second signal: stopping at once");
            std::process::exit(130);
        }
    }
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM, each time they arrive.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `beeldbrug probe`: the report on stdout; fails when the PACS did not answer C-ECHO.
async fn probe(
    config: Option<&Path>,
    json: bool,
    study: Option<String>,
    timeout: u64,
) -> anyhow::Result<()> {
    let options = ProbeOptions {
        study,
        check_timeout: std::time::Duration::from_secs(timeout.max(1)),
        ..Default::default()
    };
    let report = probe_standalone(Config::load(config)?, options).await?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if !report.echo_ok() {
        bail!(
            "the PACS did not answer C-ECHO: {}",
            report.echo.check.detail
        );
    }
    Ok(())
}

/// `beeldbrug probe`: start the gateway in-process (its Storage SCP on `dimse.listen`, the
/// address the PACS knows us by, receives the C-MOVE), probe, stop. When that address is
/// taken (a running `beeldbrug serve`), probe without the C-MOVE check. Here rather than in
/// `pacs::probe`, which `server` starts: the probe does not start the server it runs in.
async fn probe_standalone(
    mut config: Config,
    mut options: ProbeOptions,
) -> anyhow::Result<ProbeReport> {
    const NO_PACS: &str = "no [pacs] section in the configuration: there is no PACS to probe";
    let Some(pacs_config) = config.pacs.as_mut() else {
        bail!(NO_PACS);
    };
    pacs_config.probe_at_start = false;
    let pacs_config = pacs_config.clone();
    config.http.listen = "127.0.0.1:0".into();
    let listen = config.dimse.listen.clone();
    options.our_address.get_or_insert_with(|| listen.clone());
    match crate::server::start(config.clone()).await {
        Ok(running) => {
            let report = match running.context.gateway.clone() {
                Some(gateway) => Ok(probe::run_gateway(&gateway, &options).await),
                None => Err(anyhow::anyhow!(NO_PACS)),
            };
            running.stop().await;
            report
        }
        Err(crate::server::ServeError::Bind(addr, e)) if addr == listen => {
            options.skip_move = Some(format!(
                "cannot listen on {listen} for the sub-operations ({e}); if `beeldbrug serve` \
                 runs there, its start-up probe reports C-MOVE"
            ));
            let blobs = crate::store::BlobStore::open_config(&config.storage).await?;
            let index = crate::store::open_index(&config.index_url()).await?;
            let pacs = crate::pacs::Pacs::new(pacs_config, &config.dimse.ae_title);
            // `[pacs] tls = true`: the same DICOM TLS client as `serve` uses.
            let tls = crate::trust::tls::TlsState::new(&config)
                .map_err(|e| anyhow::anyhow!("TLS toward the PACS: {e}"))?;
            pacs.set_tls(std::sync::Arc::new(tls));
            Ok(probe::run(&pacs, &blobs, index.as_ref(), &options).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// `beeldbrug selftest`: the report on stdout or in `--out`; an error (exit status 1) when a
/// requirement failed.
async fn selftest(args: SelftestArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    if !crate::trust::policy::is_bsn(&args.bsn) {
        bail!(
            "--bsn {:?} is not a BSN (9 digits passing the 11-test)",
            args.bsn
        );
    }
    let timeout = std::time::Duration::from_secs(args.timeout.max(1));
    let pacs = if args.pacs {
        let options = ProbeOptions {
            check_timeout: timeout,
            ..Default::default()
        };
        Some(probe_standalone(config.clone(), options).await?)
    } else {
        None
    };
    let options = crate::selftest::Options {
        peer: args.peer.clone(),
        query_url: args.query_url.clone(),
        retrieve_url: args.retrieve_url.clone(),
        dicomweb_url: args.dicomweb_url.clone(),
        bsn: args.bsn.clone(),
        uzi: args.uzi.clone(),
        role: args.role.clone(),
        purpose_of_use: args.purpose.clone(),
        timeout,
        audit: crate::selftest::audit::Access {
            url: args.audit_url.clone(),
            identity: args.audit_cert.clone().zip(args.audit_key.clone()),
            token: match &args.audit_token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            },
        },
    };
    let report = crate::selftest::run(&config, options, pacs.as_ref()).await;
    let text = match args.format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json() + "\n",
        ReportFormat::Html => report.to_html(),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} passed, {} failed, {} skipped; report in {}",
                report.summary.pass,
                report.summary.fail,
                report.summary.skip,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    if !report.passed() {
        bail!(
            "{} requirement(s) failed: {}",
            report.summary.fail,
            report.failed().join(", ")
        );
    }
    Ok(())
}

async fn find(peer: &PeerArgs, query: &QueryArgs, json: bool) -> anyhow::Result<()> {
    let identifier = query.identifier()?;
    let (matches, status) =
        scu::find(&peer.options(), query.sop_class("find"), &identifier).await?;
    let columns: Vec<Tag> = identifier
        .iter()
        .map(|e| e.tag())
        .filter(|t| *t != SPECIFIC_CHARACTER_SET && *t != QUERY_RETRIEVE_LEVEL)
        .collect();
    let name = |t: Tag| {
        StandardDataDictionary
            .by_tag(t)
            .map(|e| e.alias().to_string())
            .unwrap_or_else(|| t.to_string())
    };
    let value = |m: &InMemDicomObject, t: Tag| {
        m.element(t)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if json {
        for m in &matches {
            let row: serde_json::Map<String, serde_json::Value> = columns
                .iter()
                .map(|&t| (name(t), value(m, t).into()))
                .collect();
            println!("{}", serde_json::Value::Object(row));
        }
    } else {
        let header: Vec<String> = columns.iter().map(|&t| name(t)).collect();
        let rows: Vec<Vec<String>> = matches
            .iter()
            .map(|m| columns.iter().map(|&t| value(m, t)).collect())
            .collect();
        print_table(&header, &rows);
        eprintln!(
            "{} matches; final status {}",
            matches.len(),
            status::describe(status)
        );
    }
    ensure_success(status)
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header));
    for r in rows {
        println!("{}", line(r));
    }
}

/// Files under the given paths, directories walked recursively, in a stable order.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

async fn store(peer: &PeerArgs, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = collect_files(paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut done = 0u32;
    let report = scu::store_files(&peer.options(), &files, |_, size| {
        done += 1;
        bar.inc(size);
        bar.set_message(format!("{done}/{} files", files.len()));
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "stored {} of {} files ({} with warnings), {:.1} MB in {:.2} s ({:.1} instances/s, {:.1} MB/s)",
        report.sent,
        files.len(),
        report.warnings,
        report.bytes as f64 / 1e6,
        secs,
        f64::from(report.sent) / secs,
        report.bytes as f64 / 1e6 / secs
    );
    for (path, why) in &report.failed {
        eprintln!("failed: {}: {why}", path.display());
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        bail!("{} files failed", report.failed.len())
    }
}

/// `beeldbrug delete`: the same delete path as DICOMweb `DELETE`, as the local administrator.
/// The delete is recorded in the audit trail; a delete that cannot be recorded is an error.
async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    use crate::trust::audit::{Audit, AuditEntry};
    let config = Config::load(args.config.as_deref())?;
    let blobs = crate::store::BlobStore::open_config(&config.storage).await?;
    let index = crate::store::open_index(&config.index_url()).await?;
    // No sender here: the audit message waits in the outbox for the running gateway.
    let audit = Audit::queue_only(&config.trust.audit, index.clone());
    let selection = crate::model::Selection {
        study_uids: vec![args.study.trim().to_string()],
        series_uids: args.series.iter().map(|s| s.trim().to_string()).collect(),
        sop_instance_uids: args.instance.iter().map(|s| s.trim().to_string()).collect(),
        ..Default::default()
    };
    let deleted = crate::store::delete::delete(index.as_ref(), &blobs, &selection).await?;
    if deleted.is_empty() {
        bail!("nothing matched: no such study, series or instance in the store");
    }
    let entry = AuditEntry {
        time: crate::clock::now_rfc3339(),
        operation: crate::trust::Operation::Delete.name().into(),
        outcome: "success".into(),
        detail: format!("beeldbrug delete: {}", deleted.describe()),
        gateway: "beeldbrug-cli".into(),
        source_address: format!(
            "local:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        grounds: "local administrator (command line)".into(),
        patient_ids: deleted.patient_ids.clone(),
        study_uids: deleted.study_uids.clone(),
        ..Default::default()
    };
    audit
        .append(entry)
        .await
        .context("the delete is done but could not be recorded in the audit trail")?;
    println!("{}", deleted.describe());
    Ok(())
}

/// `beeldbrug forward`: the forward queue from the configured index.
async fn forward_queue(config: Option<&Path>, json: bool, limit: u32) -> anyhow::Result<()> {
    use crate::pacs::forward;
    let config = Config::load(config)?;
    let index = crate::store::open_index(&config.index_url()).await?;
    let jobs = forward::queue(index.as_ref(), limit).await?;
    if json {
        for job in &jobs {
            println!("{}", forward::job_json(job));
        }
        return Ok(());
    }
    let header = [
        "ID", "STATE", "ATTEMPTS", "NEXT", "ERROR", "STUDY", "SOP", "SENDER",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.state.clone(),
                j.attempts.to_string(),
                forward::next_attempt(j).unwrap_or_else(|| "-".into()),
                j.last_error.clone(),
                j.study_instance_uid.clone(),
                j.sop_instance_uid.clone(),
                j.sender.clone(),
            ]
        })
        .collect();
    print_table(&header, &rows);
    let n = jobs.len();
    match &config.pacs {
        Some(p) => eprintln!("{n} jobs; PACS {} at {}:{}", p.ae_title, p.host, p.port),
        None => eprintln!("{n} jobs; no [pacs] configured: nothing is forwarded"),
    }
    Ok(())
}
