//! `beeldbrug audit`: read the audit trail per patient (BSN) and verify its hash chain.
//! Reading the trail is itself recorded (an AUDIT-READ record naming the patient, NEN 7513).

use super::{Audit, AuditEntry, Verification};
use crate::config::Config;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Configuration file (TOML) on top of the embedded defaults: names the index.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The patient (BSN) whose records to list.
    #[arg(long)]
    pub bsn: Option<String>,
    /// Walk the whole hash chain and report the first broken record (exit status 2 if any).
    #[arg(long)]
    pub verify: bool,
    /// One JSON object on stdout: `records` and `verification`.
    #[arg(long)]
    pub json: bool,
    /// The patient's records as CSV on stdout (RFC 4180; the console's export too).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// At most this many (newest) records.
    #[arg(long, default_value_t = 10_000)]
    pub limit: u32,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    if args.bsn.is_none() && !args.verify {
        anyhow::bail!("audit: give --bsn <BSN> to list a patient's records, or --verify");
    }
    let config = Config::load(args.config.as_deref())?;
    let index = crate::store::open_index(&config.index_url()).await?;
    // No sender here: a message for the read waits in the outbox for the running gateway.
    let audit = Audit::queue_only(&config.trust.audit, index);

    let (records, verification) = match &args.bsn {
        Some(bsn) => {
            let trail = audit.patient_trail(bsn, args.limit.max(1)).await?;
            let entry = AuditEntry {
                time: crate::clock::now_rfc3339(),
                operation: crate::trust::Operation::AuditRead.name().into(),
                outcome: "success".into(),
                detail: format!(
                    "beeldbrug audit: {} records of one patient read",
                    trail.records.len()
                ),
                gateway: "beeldbrug-cli".into(),
                source_address: format!(
                    "local:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                ),
                grounds: "local administrator (command line)".into(),
                patient_ids: vec![bsn.clone()],
                ..Default::default()
            };
            // Reading without leaving a trace is not allowed: fail if the read is not recorded.
            audit.append(entry).await?;
            (Some(trail.records), trail.verification)
        }
        None => (None, audit.verify().await?),
    };

    if args.csv {
        print!("{}", csv(records.as_deref().unwrap_or_default()));
        eprintln!("{}", describe(&verification));
    } else if args.json {
        let out = serde_json::json!({
            "patient_id": args.bsn,
            "records": records,
            "verification": verification,
        });
        println!("{out}");
    } else {
        if let Some(records) = &records {
            println!(
                "{:>6}  {:<30}  {:<10}  {:<9}  {:<16}  {:<10}  {:<9}  {:<8}  {:<22}  DETAIL",
                "SEQ", "TIME", "OPERATION", "OUTCOME", "GATEWAY", "UZI", "URA", "ROLE", "FROM"
            );
            for r in records {
                println!(
                    "{:>6}  {:<30}  {:<10}  {:<9}  {:<16}  {:<10}  {:<9}  {:<8}  {:<22}  {}",
                    r.seq,
                    r.time,
                    r.operation,
                    r.outcome,
                    r.gateway,
                    r.professional_uzi,
                    r.organisation_ura,
                    r.role,
                    r.source_address,
                    r.detail
                );
            }
            eprintln!("{} records", records.len());
        }
        eprintln!("{}", describe(&verification));
    }
    if args.verify && !verification.ok {
        std::process::exit(2);
    }
    Ok(())
}

/// The columns of [`csv`].
const CSV_COLUMNS: [&str; 18] = [
    "seq",
    "time",
    "operation",
    "outcome",
    "gateway",
    "organisation_ura",
    "professional_uzi",
    "role",
    "purpose_of_use",
    "token_id",
    "source_address",
    "certificate_sha256",
    "grounds",
    "patient_ids",
    "study_uids",
    "correlation_id",
    "trace_id",
    "detail",
];

/// A patient's records as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a
/// comma, quote or line break; lists joined with `;`), for `beeldbrug audit --csv` and the
/// console's export. A field that starts with `=`, `+`, `-` or `@` gets a leading `'` so
/// that a spreadsheet does not run it as a formula.
pub fn csv(records: &[super::redact::RecordView]) -> String {
    fn field(out: &mut String, value: &str) {
        let value = if value.starts_with(['=', '+', '-', '@']) {
            format!("'{value}")
        } else {
            value.to_string()
        };
        if value.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&value);
        }
    }
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for r in records {
        let values = [
            r.seq.to_string(),
            r.time.clone(),
            r.operation.clone(),
            r.outcome.clone(),
            r.gateway.clone(),
            r.organisation_ura.clone(),
            r.professional_uzi.clone(),
            r.role.clone(),
            r.purpose_of_use.clone(),
            r.token_id.clone(),
            r.source_address.clone(),
            r.certificate_sha256.clone(),
            r.grounds.clone(),
            r.patient_ids.join(";"),
            r.study_uids.join(";"),
            r.correlation_id.clone(),
            r.trace_id.clone(),
            r.detail.clone(),
        ];
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, v);
        }
        out.push_str("\r\n");
    }
    out
}

/// One line on the state of the chain.
pub fn describe(v: &Verification) -> String {
    match &v.broken {
        None => format!("chain: ok ({} records)", v.records),
        Some(b) => format!(
            "chain: BROKEN at record {}: {} ({} records verified before it)",
            b.seq, b.reason, v.records
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::redact::RecordView;
    use super::csv;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let record = RecordView {
            seq: 3,
            time: "2026-12-05T10:00:00Z".into(),
            operation: "WADO-RS".into(),
            outcome: "success".into(),
            detail: "said \"hi\", then\nleft".into(),
            gateway: "=HYPERLINK(\"x\")".into(),
            certificate_sha256: String::new(),
            organisation_ura: "12345678".into(),
            professional_uzi: String::new(),
            role: String::new(),
            purpose_of_use: String::new(),
            token_id: String::new(),
            source_address: "127.0.0.1:1".into(),
            grounds: String::new(),
            patient_ids: vec!["999999990".into(), "X".into()],
            study_uids: vec!["1.2".into()],
            correlation_id: String::new(),
            trace_id: String::new(),
            hash: None,
            redacted: false,
        };
        let out = csv(&[record]);
        let mut lines = out.split("\r\n");
        assert!(lines
            .next()
            .unwrap()
            .starts_with("seq,time,operation,outcome,gateway"));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("3,2026-12-05T10:00:00Z,WADO-RS,success,\"'=HYPERLINK(\"\"x\"\")\","),
            "{row}"
        );
        assert!(row.contains(",999999990;X,1.2,"), "{row}");
        assert!(
            out.ends_with("\"said \"\"hi\"\", then\nleft\"\r\n"),
            "{out}"
        );
    }
}
