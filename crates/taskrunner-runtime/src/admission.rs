//! Admission (SPEC §5.1): whether a run may be created — ids, pack and inputs planned, every
//! `uses` on this host, every required secret available and long enough to mask, room in the
//! pack's queue — and storing it `Pending` with its declared artifacts. Also where secret
//! values come from for a stored plan.

use std::sync::Arc;

use taskrunner_engine::{Journal, LogEntry, Run, RunInfo, RunStatus, Secrets};
use taskrunner_exec::ExecutorRegistry;
use taskrunner_manifest::{Diagnostic, Diagnostics, Manifest, Step, StepKind};
use taskrunner_plan::{Plan, PlanError};
use taskrunner_store::{ArtifactRecord, NewRun, StoreError};

use crate::api::{CreateRun, SECRET_BYTES_MIN, check_run_id, check_tenant, codes};
use crate::error::RuntimeError;
use crate::records::to_new_log;
use crate::shared::Shared;

impl Shared {
    /// Admits and stores a new run (`Pending`, its creation logged); returns its fresh state
    /// and empty journal. Nothing is started.
    pub(crate) async fn admit(&self, request: CreateRun) -> Result<(Run, Journal), RuntimeError> {
        check_tenant(&request.tenant)?;
        if let Some(id) = &request.run_id {
            check_run_id(id)?;
        }
        let manifest = taskrunner_manifest::parse(&request.manifest)
            .map_err(|d| RuntimeError::Plan(PlanError(d)))?;
        let plan = taskrunner_plan::plan(&manifest, &request.inputs).map_err(RuntimeError::Plan)?;
        let mut problems = Diagnostics::default();
        check_executors(&self.executors, &manifest, &mut problems);
        let secrets = self.resolve_secrets(&manifest, &mut problems);
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
            ]
            .into_iter()
            .collect(),
        };
        let artifacts = plan
            .outputs()
            .iter()
            .map(|o| ArtifactRecord {
                name: o.name().to_owned(),
                kind: match o {
                    taskrunner_plan::PlanOutput::File { .. } => "file".into(),
                    _ => "object".into(),
                },
                source_path: None,
                stored_path: None,
                status: "pending".into(),
                notes: None,
                captured_at_ms: None,
                expression_json: None,
                sha256: None,
                size_bytes: None,
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
        let _ = secrets; // resolved again by the actor: secret values are never kept around
        let journal = Journal::new(plan.hash());
        Ok((Run::new(plan, info, now), journal))
    }

    fn resolve_secrets(&self, manifest: &Manifest, problems: &mut Diagnostics) -> Secrets {
        let mut secrets = Secrets::new();
        for (i, def) in manifest.secrets().iter().enumerate() {
            match self.secrets.secret(&def.name) {
                Some(value) if value.len() < SECRET_BYTES_MIN => problems.push(Diagnostic {
                    code: codes::SECRET_TOO_SHORT,
                    path: format!("spec.secrets[{i}].name"),
                    message: format!(
                        "secret '{}' is shorter than {SECRET_BYTES_MIN} bytes and could not be masked safely",
                        def.name
                    ),
                    line: None,
                    column: None,
                }),
                Some(value) => secrets.insert(def.name.clone(), value),
                None if def.required => problems.push(Diagnostic {
                    code: codes::MISSING_SECRET,
                    path: format!("spec.secrets[{i}].name"),
                    message: format!("required secret '{}' is not available on this host", def.name),
                    line: None,
                    column: None,
                }),
                None => {}
            }
        }
        secrets
    }

    /// Required secrets of `plan` that this host cannot supply (now, or shorter than
    /// [`SECRET_BYTES_MIN`]).
    pub(crate) fn unavailable_secrets(&self, plan: &Plan) -> Vec<String> {
        plan.secrets()
            .iter()
            .filter(|s| s.required)
            .filter(|s| {
                self.secrets
                    .secret(&s.name)
                    .is_none_or(|v| v.len() < SECRET_BYTES_MIN)
            })
            .map(|s| s.name.clone())
            .collect()
    }

    /// The secret values a plan names, from the provider (never stored).
    pub(crate) fn secret_values(&self, plan: &Plan) -> (Secrets, Vec<String>) {
        let mut secrets = Secrets::new();
        let mut values = Vec::new();
        for s in plan.secrets() {
            if let Some(value) = self.secrets.secret(&s.name)
                && value.len() >= SECRET_BYTES_MIN
            {
                secrets.insert(s.name.clone(), value.clone());
                values.push(value);
            }
        }
        (secrets, values)
    }
}

/// Every `uses` of the manifest must name an executor of this host (`TR-R0001`).
fn check_executors(registry: &ExecutorRegistry, manifest: &Manifest, problems: &mut Diagnostics) {
    fn walk(steps: &[Step], path: &str, registry: &ExecutorRegistry, problems: &mut Diagnostics) {
        for (i, step) in steps.iter().enumerate() {
            visit(step, &format!("{path}[{i}]"), registry, problems);
        }
    }
    fn visit(step: &Step, at: &str, registry: &ExecutorRegistry, problems: &mut Diagnostics) {
        match &step.kind {
            StepKind::Run(run) => {
                if !registry.contains(&run.uses) {
                    let known: Vec<&str> = registry.names().collect();
                    problems.push(Diagnostic {
                        code: codes::UNKNOWN_EXECUTOR,
                        path: format!("{at}.run.uses"),
                        message: format!(
                            "executor '{}' is not available on this host, expected one of: {}",
                            run.uses,
                            known.join(", ")
                        ),
                        line: None,
                        column: None,
                    });
                }
            }
            StepKind::GateApproval(_) => {}
            StepKind::GatePolicy(gate) => {
                walk(
                    &gate.on_failure,
                    &format!("{at}.gate.policy.onFailure"),
                    registry,
                    problems,
                );
            }
            StepKind::Parallel(p) => walk(
                &p.steps,
                &format!("{at}.parallel.steps"),
                registry,
                problems,
            ),
            // `map.step` is one step, not a list.
            StepKind::Map(m) => visit(&m.step, &format!("{at}.map.step"), registry, problems),
            StepKind::Loop(l) => walk(&l.steps, &format!("{at}.loop.steps"), registry, problems),
            StepKind::Conditional(c) => {
                for (b, branch) in c.branches.iter().enumerate() {
                    walk(
                        &branch.steps,
                        &format!("{at}.conditional.branches[{b}].steps"),
                        registry,
                        problems,
                    );
                }
                walk(
                    &c.else_steps,
                    &format!("{at}.conditional.else"),
                    registry,
                    problems,
                );
            }
        }
    }
    walk(manifest.steps(), "spec.steps", registry, problems);
}
