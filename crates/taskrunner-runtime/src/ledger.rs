//! The approval ledger (issue 12, item 3): every approval gate reached across the runs of a
//! tenant, with what it requires and every decision given, newest run first, with cursor
//! paging. Read from the store alone (plan and journal of each run, replayed by the engine), so
//! the CLI answers it on the embedded store without starting a runtime, and the answer is the
//! same on every replica.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use taskrunner_engine::{Decision, RunInfo, Secrets, StepStatus, Timestamp, replay};
use taskrunner_plan::Plan;
use taskrunner_store::{Cursor, ListQuery, RunRecord, RunStore, StoreError};

use crate::error::RuntimeError;
use crate::records::verified_journal;

/// Runs read per store call while filling a page.
const RUNS_PER_READ: usize = 100;

/// Which gates a ledger query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerStatus {
    /// Waiting for decisions now.
    Pending,
    /// Reached and no longer waiting: approved, rejected, expired or ended with the run.
    Decided,
}

impl LedgerStatus {
    /// `pending` / `decided`.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Pending => "pending",
            LedgerStatus::Decided => "decided",
        }
    }

    /// Parses `pending` / `decided`.
    pub fn parse(text: &str) -> Option<LedgerStatus> {
        match text {
            "pending" => Some(LedgerStatus::Pending),
            "decided" => Some(LedgerStatus::Decided),
            _ => None,
        }
    }
}

/// A ledger query.
#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    /// Only gates in this state.
    pub status: Option<LedgerStatus>,
    /// Only runs of this pack name.
    pub pack: Option<String>,
    /// Only runs created at or after this time.
    pub since: Option<Timestamp>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Gates per page (at least the gates of one run are returned, so a page may hold more).
    pub limit: usize,
}

/// One decision on a gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDecision {
    /// Who decided.
    pub actor: String,
    /// `approved` or `rejected`.
    pub decision: Decision,
    /// The decider's comment (masked when written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When it was recorded.
    pub at: String,
    /// The plan hash the decider approved or rejected (always the run's: others are refused).
    pub plan_hash: String,
}

/// One approval gate of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The run.
    pub run_id: String,
    /// Its pack name and version.
    pub pack_name: String,
    /// Its pack version.
    pub pack_version: String,
    /// The run's plan hash: what every decision is bound to.
    pub plan_hash: String,
    /// The run's status.
    pub run_status: String,
    /// When the run was created.
    pub run_created_at: String,
    /// The gate step (an approval gate, or a policy gate waiting for its override approval).
    pub step_id: String,
    /// The approval it waits for.
    pub approval_id: String,
    /// `pending` or `decided`.
    pub status: &'static str,
    /// The step's status (`Running` while waiting, then `Succeeded`, `Failed` or `Skipped`).
    pub step_status: &'static str,
    /// Why the step ended as it did (`rejected`, `expired`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Grants, any of which lets a caller decide.
    pub grants: Vec<String>,
    /// Distinct approvers needed.
    pub required_approvals: u32,
    /// How long the gate waits, if it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_after_seconds: Option<u64>,
    /// When a pending gate expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the gate was reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<String>,
    /// Every decision given for this gate, in order.
    pub decisions: Vec<LedgerDecision>,
}

/// A page of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    /// Gates, newest run first, in plan order within a run.
    pub approvals: Vec<LedgerEntry>,
    /// Cursor of the next page; `None` on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One page of the approval ledger of `tenant`. `BadRequest` for a malformed cursor or a limit
/// of 0; `Corrupt` when a run's plan or journal does not verify.
pub async fn approval_ledger(
    runs: &dyn RunStore,
    tenant: &str,
    query: &LedgerQuery,
) -> Result<LedgerPage, RuntimeError> {
    if query.limit == 0 {
        return Err(RuntimeError::BadRequest("limit must be at least 1".into()));
    }
    let mut approvals = Vec::new();
    let mut cursor = query.cursor.clone();
    loop {
        let page = match runs
            .list_runs(
                tenant,
                ListQuery {
                    cursor: cursor.clone(),
                    limit: RUNS_PER_READ,
                },
            )
            .await
        {
            Err(StoreError::Invalid(why)) => return Err(RuntimeError::BadRequest(why)),
            other => other?,
        };
        for record in &page.runs {
            if query
                .since
                .is_some_and(|since| record.created_at_ms < since.millis())
            {
                // Newest first: every later run is older still.
                return Ok(LedgerPage {
                    approvals,
                    next_cursor: None,
                });
            }
            cursor = Some(
                Cursor {
                    created_at_ms: record.created_at_ms,
                    run_id: record.run_id.clone(),
                }
                .encode(),
            );
            if query.pack.as_ref().is_some_and(|p| *p != record.pack_name) {
                continue;
            }
            let gates = run_gates(runs, tenant, record).await?;
            approvals.extend(
                gates
                    .into_iter()
                    .filter(|g| query.status.is_none_or(|s| s.as_str() == g.status)),
            );
            if approvals.len() >= query.limit {
                return Ok(LedgerPage {
                    approvals,
                    next_cursor: cursor,
                });
            }
        }
        if page.next_cursor.is_none() {
            return Ok(LedgerPage {
                approvals,
                next_cursor: None,
            });
        }
    }
}

/// The approval gates a run reached, from its verified journal replayed on its plan.
async fn run_gates(
    runs: &dyn RunStore,
    tenant: &str,
    record: &RunRecord,
) -> Result<Vec<LedgerEntry>, RuntimeError> {
    let corrupt = |message: String| RuntimeError::Corrupt {
        run_id: record.run_id.clone(),
        message,
    };
    let (_, journal) = verified_journal(runs, tenant, &record.run_id).await?;
    let plan = Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash))
        .map_err(|e| corrupt(e.to_string()))?;
    let plan = Arc::new(plan);
    let run = replay(
        plan.clone(),
        RunInfo {
            run_id: record.run_id.clone(),
            tenant: tenant.to_owned(),
        },
        Timestamp(record.created_at_ms),
        &journal,
        &Secrets::new(),
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let state = run.state();
    let approval_gates: BTreeSet<String> = run
        .view()
        .steps
        .into_iter()
        .filter(|s| s.approval_id.is_some())
        .map(|s| s.step_id)
        .collect();
    let mut gates = Vec::new();
    for node in state.nodes.iter().filter(|n| n.reached && !n.detached) {
        let Some(approval_id) = &node.def_approval else {
            continue;
        };
        // Decisions as the engine applied them to this gate (an approval id may guard several
        // gates; each decision names the gate it completed or counted towards).
        let decisions: Vec<LedgerDecision> = state
            .decisions
            .iter()
            .filter(|d| d.gate.as_deref() == Some(node.id.as_str()))
            .map(|d| LedgerDecision {
                actor: d.actor.clone(),
                decision: d.decision,
                summary: d.summary.clone(),
                at: d.at.to_rfc3339(),
                plan_hash: record.plan_hash.clone(),
            })
            .collect();
        let waiting = node.awaiting();
        // A policy gate whose policy passed never asked for its override approval, and a gate
        // skipped by its condition never waited: neither is in the ledger.
        let asked = waiting || !decisions.is_empty() || approval_gates.contains(&node.id);
        if !asked || (node.status == StepStatus::Skipped && decisions.is_empty()) {
            continue;
        }
        let approval = plan.approval(approval_id);
        gates.push(LedgerEntry {
            run_id: record.run_id.clone(),
            pack_name: record.pack_name.clone(),
            pack_version: record.pack_version.clone(),
            plan_hash: record.plan_hash.clone(),
            run_status: record.status.clone(),
            run_created_at: Timestamp(record.created_at_ms).to_rfc3339(),
            step_id: node.id.clone(),
            approval_id: approval_id.clone(),
            status: if waiting {
                LedgerStatus::Pending.as_str()
            } else {
                LedgerStatus::Decided.as_str()
            },
            step_status: node.status.as_str(),
            status_reason: node.status_reason.clone(),
            grants: approval.map(|a| a.grants.clone()).unwrap_or_default(),
            required_approvals: approval.map_or(1, |a| a.required_approvals),
            expires_after_seconds: approval.and_then(|a| a.expires_after_seconds),
            expires_at: node
                .gate
                .as_ref()
                .filter(|_| waiting)
                .and_then(|g| g.deadline)
                .map(Timestamp::to_rfc3339),
            reached_at: node.started_at.map(Timestamp::to_rfc3339),
            decisions,
        });
    }
    Ok(gates)
}

impl crate::Runtime {
    /// One page of the approval ledger of `tenant` (see [`approval_ledger`]).
    pub async fn approval_ledger(
        &self,
        tenant: &str,
        query: &LedgerQuery,
    ) -> Result<LedgerPage, RuntimeError> {
        crate::api::check_tenant(tenant)?;
        approval_ledger(&*self.shared.stores.runs, tenant, query).await
    }
}
