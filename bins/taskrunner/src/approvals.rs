//! `taskrunner approvals`: the approval ledger of the embedded store (the same entries as
//! `GET /v1/task-runner/approvals`), read without starting a runtime.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use taskrunner_runtime::{LedgerEntry, LedgerQuery, LedgerStatus, Timestamp, approval_ledger};

use crate::config::Settings;
use crate::evidence::open_store;

/// Gates read per ledger page.
const PAGE: usize = 500;

/// How the ledger is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedgerFormat {
    /// One line per gate for people.
    Text,
    /// One JSON object per gate per line (export).
    Ndjson,
}

/// The whole ledger of the default tenant that matches the filters, printed.
pub(crate) async fn approvals(
    settings: &Settings,
    status: Option<&str>,
    pack: Option<String>,
    since: Option<&str>,
    format: LedgerFormat,
) -> Result<String> {
    let status = status
        .map(|s| {
            LedgerStatus::parse(s)
                .ok_or_else(|| anyhow!("--status must be `pending` or `decided`, got {s:?}"))
        })
        .transpose()?;
    let since = since
        .map(|s| {
            Timestamp::parse_rfc3339(s).map_err(|_| {
                anyhow!("--since must be an RFC 3339 time (e.g. 2026-12-08T00:00:00Z), got {s:?}")
            })
        })
        .transpose()?;
    let store = open_store(settings)?;
    let mut query = LedgerQuery {
        status,
        pack,
        since,
        cursor: None,
        limit: PAGE,
    };
    let mut out = String::new();
    loop {
        let page = approval_ledger(&*store.runs, &settings.default_tenant, &query)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        for entry in &page.approvals {
            match format {
                LedgerFormat::Ndjson => {
                    out.push_str(&serde_json::to_string(entry)?);
                    out.push('\n');
                }
                LedgerFormat::Text => line(&mut out, entry),
            }
        }
        match page.next_cursor {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    if out.is_empty() && format == LedgerFormat::Text {
        out.push_str("no approval gates\n");
    }
    Ok(out)
}

/// `RUN  PACK@VERSION  STEP (APPROVAL)  STATUS  n/required  decisions…  plan hash`.
fn line(out: &mut String, e: &LedgerEntry) {
    let approvals = e
        .decisions
        .iter()
        .filter(|d| d.decision == taskrunner_runtime::Decision::Approved)
        .count();
    let decisions: Vec<String> = e
        .decisions
        .iter()
        .map(|d| {
            let verb = match d.decision {
                taskrunner_runtime::Decision::Approved => "approved",
                taskrunner_runtime::Decision::Rejected => "rejected",
                taskrunner_runtime::Decision::Expired => "expired",
            };
            format!("{} {verb} at {}", d.actor, d.at)
        })
        .collect();
    let status = match (&e.status_reason, e.status) {
        (Some(reason), "decided") => format!("decided ({reason})"),
        (_, status) => status.to_owned(),
    };
    let _ = writeln!(
        out,
        "{}  {}@{}  {} ({})  {}  {}/{}  {}  {}",
        e.run_id,
        e.pack_name,
        e.pack_version,
        e.step_id,
        e.approval_id,
        status,
        approvals,
        e.required_approvals,
        if decisions.is_empty() {
            "-".to_owned()
        } else {
            decisions.join(", ")
        },
        e.plan_hash
    );
}
