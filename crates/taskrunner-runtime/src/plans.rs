//! Reading runs' plans back for approvers: a run's stored plan (the exact canonical bytes its
//! `planHash` is computed over), the plan behind a hash in a tenant, and a run's **baseline**
//! (the run a plan diff compares it with). See docs/PLAN_DIFF.md.

use taskrunner_engine::{RunStatus, RunView, StepStatus};
use taskrunner_plan::Plan;
use taskrunner_store::{ListQuery, RunRecord};

use crate::error::RuntimeError;
use crate::runtime::Runtime;
use crate::views::RunSummary;

/// Page size when scanning a tenant's runs (the store's largest page).
const SCAN_PAGE: usize = taskrunner_store::LIST_LIMIT_MAX;

/// A run's plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredPlan {
    /// `sha256:` + hex of `canonical`.
    pub plan_hash: String,
    /// The RFC 8785 canonical JSON of the plan: the bytes the hash is computed over. Secrets
    /// appear by name only.
    pub canonical: String,
}

fn decode(record: &RunRecord) -> Result<Plan, RuntimeError> {
    Plan::from_canonical_json(&record.plan_json, Some(&record.plan_hash)).map_err(|e| {
        RuntimeError::Corrupt {
            run_id: record.run_id.clone(),
            message: e.to_string(),
        }
    })
}

/// True when every approval gate the run reached was approved: each enabled `GateApproval`
/// step that was not skipped succeeded (a gate succeeds only when approved).
pub fn approvals_all_approved(view: &RunView) -> bool {
    view.steps
        .iter()
        .filter(|s| s.kind == "GateApproval" && s.enabled && s.status != StepStatus::Skipped)
        .all(|s| s.status == StepStatus::Succeeded)
}

impl Runtime {
    /// The run's stored plan, checked against its hash, or `None` when the tenant has no such
    /// run.
    pub async fn run_plan(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<StoredPlan>, RuntimeError> {
        let Some(record) = self.shared.stores.runs.get_run(tenant, run_id).await? else {
            return Ok(None);
        };
        // Decoding re-encodes and re-hashes: bytes that no longer match their hash are refused.
        decode(&record)?;
        Ok(Some(StoredPlan {
            plan_hash: record.plan_hash,
            canonical: record.plan_json,
        }))
    }

    /// The run's plan, decoded, with its summary; `None` when the tenant has no such run.
    pub async fn run_plan_decoded(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<(RunSummary, Plan)>, RuntimeError> {
        let Some(record) = self.shared.stores.runs.get_run(tenant, run_id).await? else {
            return Ok(None);
        };
        let plan = decode(&record)?;
        Ok(Some((RunSummary::from_record(record)?, plan)))
    }

    /// The plan whose hash is `plan_hash`, from the newest run of the tenant that has it (and
    /// that run's id); `None` when no run of the tenant has that plan. Scans the tenant's runs.
    pub async fn plan_by_hash(
        &self,
        tenant: &str,
        plan_hash: &str,
    ) -> Result<Option<(String, Plan)>, RuntimeError> {
        let mut cursor = None;
        loop {
            let page = self.scan_page(tenant, cursor).await?;
            for run in &page.runs {
                if run.plan_hash == plan_hash
                    && let Some((_, plan)) = self.run_plan_decoded(tenant, &run.run_id).await?
                {
                    return Ok(Some((run.run_id.clone(), plan)));
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(None),
            }
        }
    }

    /// The baseline of a run: the most recent other run of the same pack name in the tenant,
    /// created no later than it, that succeeded and whose approval gates were all approved
    /// ([`approvals_all_approved`]). `NotFound` for an unknown run; `None` when there is no
    /// such run.
    pub async fn baseline(
        &self,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<RunSummary>, RuntimeError> {
        let current = self
            .run_record(tenant, run_id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("run {run_id}")))?;
        let mut cursor = None;
        loop {
            let page = self.scan_page(tenant, cursor).await?;
            for run in page.runs {
                if run.run_id == current.run_id
                    || run.pack_name != current.pack_name
                    || run.status != RunStatus::Succeeded
                    || run.created_at > current.created_at
                {
                    continue;
                }
                let approved = self
                    .get_run(tenant, &run.run_id)
                    .await?
                    .is_some_and(|view| approvals_all_approved(&view));
                if approved {
                    return Ok(Some(run));
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(None),
            }
        }
    }

    async fn scan_page(
        &self,
        tenant: &str,
        cursor: Option<String>,
    ) -> Result<crate::views::RunPage, RuntimeError> {
        self.list_runs(
            tenant,
            ListQuery {
                cursor,
                limit: SCAN_PAGE,
            },
        )
        .await
    }
}
