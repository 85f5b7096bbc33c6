//! Admission (SPEC §5.1): whether a run may be created — ids, pack and inputs planned, every
//! `uses` on this host, every required secret available and long enough to mask, room in the
//! pack's queue — and storing it `Pending` with its declared artifacts. Also where secret
//! values come from for a stored plan.

use std::collections::BTreeSet;
use std::sync::Arc;

use taskrunner_engine::{Journal, LogEntry, Run, RunInfo, RunStatus, Secrets};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_plan::{Diagnostic, Diagnostics, Plan, PlanError, PlanStep, PlanStepKind};
use taskrunner_store::{NewRun, StoreError};

use crate::api::{CreateRun, SECRET_BYTES_MIN, check_run_id, check_tenant, codes};
use crate::error::RuntimeError;
use crate::output::artifact;
use crate::records::to_new_log;
use crate::shared::Shared;
use crate::views::ArtifactKind;

impl Shared {
    /// Admits and stores a new run (`Pending`, its creation logged); returns its fresh state
    /// and empty journal. Nothing is started.
    pub(crate) async fn admit(&self, request: CreateRun) -> Result<(Run, Journal), RuntimeError> {
        check_tenant(&request.tenant)?;
        if let Some(id) = &request.run_id {
            check_run_id(id)?;
        }
        let plan = taskrunner_plan::plan_yaml(&request.manifest, &request.inputs)
            .map_err(RuntimeError::Plan)?;
        let mut problems = Diagnostics::default();
        check_executors(&self.executors, &plan, &mut problems);
        // Secret values are never kept around: the driver resolves them again.
        for secret in self.resolve_secrets(&plan).unavailable {
            if let Some(problem) = secret.diagnostic() {
                problems.push(problem);
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::Plan(PlanError(problems)));
        }
        if let Some(max) = plan.slo().max_queue_depth {
            let queued = self
                .stores
                .runs
                .queued_count(&request.tenant, &plan.pack().name)
                .await?;
            metrics::gauge!("taskrunner_queue_depth", "pack" => plan.pack().name.clone())
                .set(queued as f64);
            if queued >= max {
                metrics::counter!("taskrunner_queue_full_total").increment(1);
                return Err(RuntimeError::QueueFull(queued));
            }
        }
        let run_id = match request.run_id {
            Some(id) => id,
            None => self.generate_run_id(),
        };
        let now = self.clock.now();
        let plan = Arc::new(plan);
        let info = RunInfo {
            run_id: run_id.clone(),
            tenant: request.tenant.clone(),
        };
        let created = LogEntry {
            timestamp: now,
            level: taskrunner_engine::Level::Info,
            event_type: "run.created".into(),
            message: "Run created.".into(),
            step_id: None,
            metadata: [
                ("planHash".to_owned(), plan.hash().to_owned()),
                ("requestedAt".to_owned(), now.to_rfc3339()),
                // The pack text the plan was made from, for evidence (`externalParameters`).
                (
                    "manifestDigest".to_owned(),
                    taskrunner_plan::hash_bytes(request.manifest.as_bytes()),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let artifacts = plan
            .outputs()
            .iter()
            .map(|o| {
                let kind = match o {
                    taskrunner_plan::PlanOutput::File { .. } => ArtifactKind::File,
                    _ => ArtifactKind::Object,
                };
                artifact(o.name(), kind)
            })
            .collect();
        let new_run = NewRun {
            tenant: request.tenant.clone(),
            run_id: run_id.clone(),
            pack_name: plan.pack().name.clone(),
            pack_version: plan.pack().version.clone(),
            plan_hash: plan.hash().to_owned(),
            plan_json: plan.canonical_json().to_owned(),
            created_at_ms: now.millis(),
            status: RunStatus::Pending.as_str().to_owned(),
            host_digest: None,
            journal: Vec::new(),
            logs: vec![to_new_log(&created)],
            artifacts,
        };
        match self.stores.runs.create_run(new_run).await {
            Ok(()) => metrics::counter!("taskrunner_runs_created_total").increment(1),
            Err(StoreError::RunExists) => return Err(RuntimeError::RunExists(run_id)),
            Err(e) => return Err(e.into()),
        }
        let journal = Journal::new(plan.hash());
        Ok((Run::new(plan, info, now), journal))
    }

    /// The one secret resolver: the values of the secrets `plan` names, from the provider
    /// (never stored), and the ones this host cannot supply. A value shorter than
    /// [`SECRET_BYTES_MIN`] could not be masked safely and counts as not supplied.
    pub(crate) fn resolve_secrets(&self, plan: &Plan) -> ResolvedSecrets {
        let mut resolved = ResolvedSecrets {
            secrets: Secrets::new(),
            values: Vec::new(),
            unavailable: Vec::new(),
        };
        for (index, def) in plan.secrets().iter().enumerate() {
            let unavailable = |too_short| UnavailableSecret {
                index,
                name: def.name.clone(),
                required: def.required,
                too_short,
            };
            match self.secrets.secret(&def.name) {
                Some(value) if value.len() < SECRET_BYTES_MIN => {
                    resolved.unavailable.push(unavailable(true));
                }
                Some(value) => {
                    resolved.secrets.insert(def.name.clone(), value.clone());
                    resolved.values.push(value);
                }
                None => resolved.unavailable.push(unavailable(false)),
            }
        }
        resolved
    }
}

/// What [`Shared::resolve_secrets`] found.
pub(crate) struct ResolvedSecrets {
    /// The values by name, for masking and for expressions.
    pub(crate) secrets: Secrets,
    /// The same values, for executors to mask output lines with.
    pub(crate) values: Vec<String>,
    /// The secrets the plan names that this host cannot supply, in declared order.
    pub(crate) unavailable: Vec<UnavailableSecret>,
}

/// A secret the plan names that this host cannot supply.
pub(crate) struct UnavailableSecret {
    /// Its place in `spec.secrets`.
    pub(crate) index: usize,
    pub(crate) name: String,
    /// The pack needs it (an optional secret may be absent, never too short).
    pub(crate) required: bool,
    /// The host has a value, shorter than [`SECRET_BYTES_MIN`].
    pub(crate) too_short: bool,
}

impl UnavailableSecret {
    /// Why a run cannot be created without it (`TR-R0003`, `TR-R0002`); `None` for an
    /// optional secret the host does not have.
    fn diagnostic(&self) -> Option<Diagnostic> {
        let path = format!("spec.secrets[{}].name", self.index);
        let (code, message) = if self.too_short {
            (
                codes::SECRET_TOO_SHORT,
                format!(
                    "secret '{}' is shorter than {SECRET_BYTES_MIN} bytes and could not be masked safely",
                    self.name
                ),
            )
        } else if self.required {
            (
                codes::MISSING_SECRET,
                format!(
                    "required secret '{}' is not available on this host",
                    self.name
                ),
            )
        } else {
            return None;
        };
        Some(Diagnostic {
            code,
            path,
            message,
            line: None,
            column: None,
        })
    }
}

/// Every `uses` of the plan must name an executor of this host (`TR-R0001`), reported once
/// per manifest step at its manifest path. The plan tree is walked with the manifest's shape:
/// an expanded map or loop repeats its body per iteration (one report), a conditional lists
/// every branch's steps and then `else`'s, a policy gate its `onFailure` steps. A body expanded
/// to no iteration at all is not in the plan and needs no executor: it can never run.
fn check_executors(registry: &ExecutorRegistry, plan: &Plan, problems: &mut Diagnostics) {
    let mut reported = BTreeSet::new();
    let mut check = |step: &PlanStep, at: &str| {
        if let PlanStepKind::Run { uses, .. } = &step.kind
            && !registry.contains(uses)
            && reported.insert(at.to_owned())
        {
            let known: Vec<&str> = registry.names().collect();
            problems.push(Diagnostic {
                code: codes::UNKNOWN_EXECUTOR,
                path: format!("{at}.run.uses"),
                message: format!(
                    "executor '{uses}' is not available on this host, expected one of: {}",
                    known.join(", ")
                ),
                line: None,
                column: None,
            });
        }
    };
    for (i, step) in plan.steps().iter().enumerate() {
        walk(step, &format!("spec.steps[{i}]"), &mut check);
    }
}

/// Visits `step` (at manifest path `at`) and its children, depth-first in manifest order.
fn walk(step: &PlanStep, at: &str, visit: &mut impl FnMut(&PlanStep, &str)) {
    visit(step, at);
    let children = &step.children;
    match &step.kind {
        PlanStepKind::GatePolicy { .. } => {
            for (i, child) in children.iter().enumerate() {
                walk(child, &format!("{at}.gate.policy.onFailure[{i}]"), visit);
            }
        }
        PlanStepKind::Parallel { .. } => {
            for (i, child) in children.iter().enumerate() {
                walk(child, &format!("{at}.parallel.steps[{i}]"), visit);
            }
        }
        // `map.step` is one step, not a list.
        PlanStepKind::Map { .. } => {
            for child in children {
                walk(child, &format!("{at}.map.step"), visit);
            }
        }
        PlanStepKind::Loop { body_len, .. } => {
            for (i, child) in children.iter().enumerate() {
                let j = i % (*body_len).max(1);
                walk(child, &format!("{at}.loop.steps[{j}]"), visit);
            }
        }
        PlanStepKind::Conditional {
            branches,
            else_step_count,
            ..
        } => {
            let mut rest = children.iter();
            for (b, branch) in branches.iter().enumerate() {
                for (j, child) in rest.by_ref().take(branch.step_count).enumerate() {
                    walk(
                        child,
                        &format!("{at}.conditional.branches[{b}].steps[{j}]"),
                        visit,
                    );
                }
            }
            for (j, child) in rest.take(*else_step_count).enumerate() {
                walk(child, &format!("{at}.conditional.else[{j}]"), visit);
            }
        }
        // Run steps and approval gates have no children; a kind added later is visited with
        // its parent's path rather than skipped.
        _ => {
            for child in children {
                walk(child, at, visit);
            }
        }
    }
}
