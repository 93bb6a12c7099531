//! The self-test's report: per requirement its id, text, REFERENCE section, pass / fail /
//! skip and the evidence; as text (a terminal), JSON (a program) and a self-contained HTML
//! page (no scripts, no outside resources) a vendor can hand to Twiin.

use super::Requirement;
use serde::Serialize;
use std::fmt::Write;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not run: nothing to run it on (said why in the evidence).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One requirement checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub requirement: &'static str,
    pub reference: &'static str,
    pub status: Status,
    pub evidence: String,
    /// The correlation id the check's call carried (to find it in the peer's audit trail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub millis: u64,
}

impl Check {
    pub fn new(
        requirement: &Requirement,
        status: Status,
        evidence: impl Into<String>,
        started: Instant,
    ) -> Check {
        Check {
            id: requirement.id,
            requirement: requirement.text,
            reference: requirement.reference,
            status,
            evidence: evidence.into(),
            correlation_id: None,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn pass(r: &Requirement, evidence: impl Into<String>, started: Instant) -> Check {
        Check::new(r, Status::Pass, evidence, started)
    }

    pub fn fail(r: &Requirement, evidence: impl Into<String>, started: Instant) -> Check {
        Check::new(r, Status::Fail, evidence, started)
    }

    pub fn skip(r: &Requirement, evidence: impl Into<String>) -> Check {
        Check::new(r, Status::Skip, evidence, Instant::now())
    }

    pub fn correlated(mut self, id: &str) -> Check {
        self.correlation_id = Some(id.to_string());
        self
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub peer: String,
    pub started_at: String,
    pub finished_at: String,
    pub summary: Summary,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(peer: String, started_at: String, checks: Vec<Check>) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Report {
            tool: format!("beeldbrug {}", env!("CARGO_PKG_VERSION")),
            peer,
            started_at,
            finished_at: crate::clock::now_rfc3339(),
            summary,
            checks,
        }
    }

    /// No requirement failed.
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }

    /// The ids of the checks that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Qualification self-test of {} ({}), {} to {}",
            self.peer, self.tool, self.started_at, self.finished_at
        );
        for c in &self.checks {
            let _ = writeln!(
                out,
                "\n[{:<4}] {}  ({}, {} ms)\n       {}\n       {}",
                c.status.label(),
                c.id,
                c.reference,
                c.millis,
                c.requirement,
                c.evidence.replace('\n', "\n       ")
            );
            if let Some(id) = &c.correlation_id {
                let _ = writeln!(out, "       correlation id: {id}");
            }
        }
        let _ = writeln!(
            out,
            "\n{} passed, {} failed, {} skipped: {}",
            self.summary.pass,
            self.summary.fail,
            self.summary.skip,
            if self.passed() {
                "QUALIFIES"
            } else {
                "DOES NOT QUALIFY"
            }
        );
        out
    }

    /// One page, styles inline, no scripts or outside resources.
    pub fn to_html(&self) -> String {
        let e = crate::xml::escape;
        let mut rows = String::new();
        for c in &self.checks {
            let class = match c.status {
                Status::Pass => "pass",
                Status::Fail => "fail",
                Status::Skip => "skip",
            };
            let correlation = c
                .correlation_id
                .as_deref()
                .map(|id| {
                    format!(
                        "<div class=\"corr\">correlation id: <code>{}</code></div>",
                        e(id)
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                rows,
                "<tr class=\"{class}\"><td class=\"status\">{}</td><td><code>{}</code></td>\
<td>{}<div class=\"ref\">{}</div></td><td><pre>{}</pre>{correlation}</td><td class=\"ms\">{}</td></tr>",
                c.status.label(),
                e(c.id),
                e(c.requirement),
                e(c.reference),
                e(&c.evidence),
                c.millis
            );
        }
        let verdict = if self.passed() {
            "<p class=\"verdict pass\">Every requirement checked passed.</p>"
        } else {
            "<p class=\"verdict fail\">One or more requirements failed.</p>"
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Qualification self-test: {peer}</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}}\
th{{background:#eee}}pre{{white-space:pre-wrap;margin:0;font-size:.85em}}.ref,.corr{{color:#666;font-size:.85em;margin-top:.3em}}\
tr.pass td.status{{background:#d4f4d4}}tr.fail td.status{{background:#f8d0d0;font-weight:bold}}tr.skip td.status{{background:#eee}}\
.verdict{{font-size:1.2em;padding:.5em}}.verdict.pass{{background:#d4f4d4}}.verdict.fail{{background:#f8d0d0}}.ms{{text-align:right}}</style>\
</head><body>\n<h1>Qualification self-test</h1>\n\
<table class=\"meta\"><tr><th>Peer</th><td>{peer}</td></tr><tr><th>Tested by</th><td>{tool}</td></tr>\
<tr><th>Run</th><td>{start} – {end}</td></tr><tr><th>Result</th><td>{pass} passed, {fail} failed, {skip} skipped</td></tr></table>\n\
{verdict}\n<table><thead><tr><th>Status</th><th>Check</th><th>Requirement (REFERENCE section)</th><th>Evidence</th><th>ms</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
<p class=\"ref\">Requirements from beeldbrug's REFERENCE (Twiin, Nictiz, IHE and DICOM material; the normative text wins). \
Correlation ids let the peer's operator find each call of this run in their NEN 7513 audit trail.</p>\n</body></html>\n",
            peer = e(&self.peer),
            tool = e(&self.tool),
            start = e(&self.started_at),
            end = e(&self.finished_at),
            pass = self.summary.pass,
            fail = self.summary.fail,
            skip = self.summary.skip,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Requirement = Requirement {
        id: "x.one",
        text: "A <requirement>",
        reference: "REFERENCE §2 Trust",
    };

    #[test]
    fn formats_carry_every_check_and_escape_evidence() {
        let report = Report::new(
            "https://peer".into(),
            "t0".into(),
            vec![
                Check::pass(&R, "fine", Instant::now()).correlated("urn:uuid:1"),
                Check::fail(&R, "<script>alert(1)</script>", Instant::now()),
                Check::skip(&R, "nothing"),
            ],
        );
        assert!(!report.passed());
        assert_eq!(report.failed(), vec!["x.one"]);
        let html = report.to_html();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("urn:uuid:1") && html.contains("REFERENCE §2 Trust"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["summary"]["fail"], 1);
        assert_eq!(json["checks"][0]["status"], "pass");
        assert_eq!(json["checks"][0]["correlation_id"], "urn:uuid:1");
        let text = report.to_text();
        assert!(text.contains("[FAIL] x.one") && text.contains("DOES NOT QUALIFY"));
    }
}
