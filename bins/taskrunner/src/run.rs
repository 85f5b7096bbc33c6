//! `taskrunner run` and `taskrunner resume`: wiring of the runtime on the embedded SQLite store
//! under `--data-dir`, with live output. Exit codes (issue contract): 0 succeeded, 1 failed,
//! 2 invalid pack or inputs, 4 cancelled, 5 waiting for approval.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::time::Duration;
use taskrunner_engine::{Decision, RunStatus, RunView, StepStatus, Timestamp};

use taskrunner_runtime::{
    CLAIM_EVERY_MAX, ChainedSecrets, CreateRun, DecisionRequest, DirSecrets, EnvSecrets,
    RENEW_EVERY_MAX, ReplicaConfig, Runtime, RuntimeConfig, RuntimeError, SystemClock,
};
use taskrunner_store::{LogRecord, Store};
use taskrunner_store_postgres::{PostgresConfig, PostgresStore};
use taskrunner_store_sqlite::{SqliteConfig, SqliteStore};

use crate::config::DatabaseSettings;

/// The embedded store's directory inside the data directory (workspaces sit beside it).
pub(crate) const STORE_DIR: &str = "store";

/// How a local run ended, as an exit code.
pub(crate) enum Ending {
    Succeeded,
    Failed,
    Invalid,
    Cancelled,
    AwaitingApproval,
}

impl Ending {
    pub(crate) fn code(&self) -> u8 {
        match self {
            Ending::Succeeded => 0,
            Ending::Failed => 1,
            Ending::Invalid => 2,
            Ending::Cancelled => 4,
            Ending::AwaitingApproval => 5,
        }
    }
}

/// Output settings shared by `run` and `resume`.
pub(crate) struct Output {
    pub(crate) ndjson: bool,
    /// The actor of decisions and cancellation given on the command line.
    pub(crate) actor: String,
}

/// The effective configuration of a local run (see `config.rs`).
pub(crate) struct Local {
    pub(crate) data_dir: PathBuf,
    /// Run workspaces (`workspace_root` setting).
    pub(crate) workspace_root: PathBuf,
    pub(crate) secrets_dir: Option<PathBuf>,
    /// The tenant runs are created in and looked up under (`default_tenant`).
    pub(crate) tenant: String,
    /// The sandbox, launcher and executors (`wiring::executors`, shared with `serve`).
    pub(crate) executors: crate::wiring::Executors,
}

/// Starts the runtime: on the embedded SQLite store under the data directory, or — with
/// `database` (`serve --database-url`) — as a replica on PostgreSQL (SPEC rule 29).
pub(crate) async fn start(local: &Local, database: Option<&DatabaseSettings>) -> Result<Runtime> {
    std::fs::create_dir_all(&local.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            local.data_dir.display()
        )
    })?;
    let mut config = RuntimeConfig::new(&local.workspace_root);
    let store = match database {
        None => Store::new(
            SqliteStore::open(local.data_dir.join(STORE_DIR), SqliteConfig::default())
                .with_context(|| {
                    format!("cannot open the store in {}", local.data_dir.display())
                })?,
        ),
        Some(db) => {
            let pg = PostgresStore::connect(PostgresConfig::new(db.url.clone(), &db.artifact_dir))
                .await
                .context("cannot open the PostgreSQL store (database_url)")?;
            let ttl = Duration::from_millis(db.lease_ttl_ms);
            let name = std::env::var("HOSTNAME").unwrap_or_default();
            config = config.with_replica(ReplicaConfig {
                lease_ttl: ttl,
                renew_every: (ttl / 3).min(RENEW_EVERY_MAX),
                claim_every: (ttl / 5).min(CLAIM_EVERY_MAX),
                max_drivers: db.max_drivers,
                ..ReplicaConfig::new(ReplicaConfig::unique_owner(&name))
            });
            Store::new(pg)
        }
    };
    let mut secrets = ChainedSecrets::new();
    if let Some(dir) = &local.secrets_dir {
        secrets = secrets.push(DirSecrets::new(dir));
    }
    secrets = secrets.push(EnvSecrets);
    // Rule 17: whatever attempts of a killed process left running dies before they are retried.
    let reaped = local.executors.launcher.reap_leftovers();
    if let Some(warning) = local.executors.run_warning() {
        eprintln!("{warning}");
    }
    if reaped > 0 {
        eprintln!("stopped {reaped} leftover process(es) of interrupted attempts");
    }
    Runtime::start(
        store,
        local.executors.registry.clone(),
        Arc::new(SystemClock),
        Arc::new(secrets),
        config,
    )
    .await
    .context("cannot start the runtime")
}

/// Creates a run of `manifest` and follows it.
pub(crate) async fn run(
    local: Local,
    file: &Path,
    manifest: String,
    inputs: Map<String, Value>,
    run_id: Option<String>,
    approve: Vec<String>,
    output: Output,
) -> Result<Ending> {
    // Approval ids given up front must exist, before anything is created.
    if let Ok(parsed) = taskrunner_manifest::parse(&manifest) {
        let unknown: Vec<&String> = approve
            .iter()
            .filter(|a| parsed.approval(a).is_none())
            .collect();
        if !unknown.is_empty() {
            for a in unknown {
                eprintln!(
                    "{}: --approve {a}: no approval '{a}' in spec.approvals",
                    file.display()
                );
            }
            return Ok(Ending::Invalid);
        }
    }
    let rt = start(&local, None).await?;
    let request = CreateRun {
        tenant: local.tenant.clone(),
        run_id,
        manifest,
        inputs,
    };
    let view = match rt.create_run(request).await {
        Ok(view) => view,
        Err(RuntimeError::Plan(e)) => {
            crate::print_diagnostics(file, e.diagnostics());
            return Ok(Ending::Invalid);
        }
        Err(e @ (RuntimeError::RunExists(_) | RuntimeError::BadRequest(_))) => {
            eprintln!("error: {e}");
            return Ok(Ending::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("run {} created (plan {})", view.run_id, view.plan_hash);
    for approval in &approve {
        decide(
            &rt,
            &local.tenant,
            &view,
            approval,
            Decision::Approved,
            &output.actor,
        )
        .await?;
    }
    follow(&rt, &local.tenant, &view.run_id, output).await
}

/// Decides gates of an existing run and follows it.
pub(crate) async fn resume(
    local: Local,
    run_id: &str,
    approve: Vec<String>,
    reject: Vec<String>,
    output: Output,
) -> Result<Ending> {
    let rt = start(&local, None).await?;
    let tenant = local.tenant.as_str();
    let Some(view) = rt.get_run(tenant, run_id).await? else {
        anyhow::bail!(
            "no run {run_id} of tenant {tenant} in {}",
            local.data_dir.display()
        );
    };
    if !view.status.is_terminal() {
        let missing = rt.missing_secrets(tenant, run_id).await?;
        if !missing.is_empty() {
            for name in &missing {
                eprintln!("{run_id}: required secret '{name}' is not available on this host");
            }
            rt.shutdown();
            return Ok(Ending::Invalid);
        }
    }
    for approval in &approve {
        decide(
            &rt,
            tenant,
            &view,
            approval,
            Decision::Approved,
            &output.actor,
        )
        .await?;
    }
    for approval in &reject {
        decide(
            &rt,
            tenant,
            &view,
            approval,
            Decision::Rejected,
            &output.actor,
        )
        .await?;
    }
    follow(&rt, tenant, run_id, output).await
}

async fn decide(
    rt: &Runtime,
    tenant: &str,
    view: &RunView,
    approval: &str,
    decision: Decision,
    actor: &str,
) -> Result<()> {
    let request = DecisionRequest {
        caller_scopes: None,
        decision,
        plan_hash: view.plan_hash.clone(),
        actor: actor.to_owned(),
        summary: Some("given on the command line".into()),
    };
    match rt.decide(tenant, &view.run_id, approval, request).await {
        Ok(outcome) => {
            eprintln!(
                "{approval}: {}{}",
                decision.as_str(),
                if outcome.resumed {
                    " (gate passed)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("deciding {approval}"))),
    }
}

/// Prints the run's log as it grows until the run is terminal or parked at a gate. Ctrl-C
/// cancels the run gracefully.
async fn follow(rt: &Runtime, tenant: &str, run_id: &str, output: Output) -> Result<Ending> {
    let actor = output.actor.clone();
    let mut printer = Printer::new(output, tenant);
    let mut live = rt.subscribe_logs(tenant, run_id);
    let mut watch = rt.watch(tenant, run_id);
    let mut after = 0;
    let mut cancelling = false;
    loop {
        printer.clear_progress();
        after = printer.print_new(rt, run_id, after).await?;
        if let Some(w) = &watch {
            printer.show_progress(&w.borrow());
        }
        let settled = match &watch {
            Some(w) => {
                let snap = w.borrow();
                snap.view.status.is_terminal() || snap.is_parked()
            }
            None => true,
        };
        if settled {
            break;
        }
        tokio::select! {
            _ = async { match &mut live { Some(l) => { let _ = l.recv().await; } None => std::future::pending().await } } => {}
            changed = async { match &mut watch { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    watch = None;
                    live = None;
                }
            }
            _ = tokio::signal::ctrl_c(), if !cancelling => {
                cancelling = true;
                eprintln!("cancelling run {run_id}…");
                rt.cancel(tenant, run_id, Some(actor.clone())).await?;
            }
        }
    }
    printer.clear_progress();
    let view = rt.wait_settled(tenant, run_id).await?;
    printer.print_new(rt, run_id, after).await?;
    let ending = match view.status {
        RunStatus::Succeeded => Ending::Succeeded,
        RunStatus::Failed => Ending::Failed,
        RunStatus::Cancelled => Ending::Cancelled,
        RunStatus::AwaitingApproval => {
            let gates: Vec<String> = view
                .steps
                .iter()
                .filter(|s| s.status_reason.as_deref() == Some("awaiting-approval"))
                .map(|s| {
                    format!(
                        "{} (approval {})",
                        s.step_id,
                        s.approval_id.clone().unwrap_or_default()
                    )
                })
                .collect();
            eprintln!(
                "run {run_id} is waiting for approval at {}; continue with: taskrunner resume {run_id} --approve <ID>",
                gates.join(", ")
            );
            Ending::AwaitingApproval
        }
        RunStatus::Pending | RunStatus::Running => Ending::Failed,
    };
    if !printer.output.ndjson {
        eprintln!("run {run_id}: {}", view.status.as_str());
    }
    rt.shutdown();
    Ok(ending)
}

struct Printer {
    output: Output,
    tenant: String,
    tty: bool,
    /// A progress line is on the terminal (stderr) and must be cleared before more output.
    progress_shown: bool,
}

impl Printer {
    fn new(output: Output, tenant: &str) -> Printer {
        Printer {
            output,
            tenant: tenant.to_owned(),
            tty: std::io::stdout().is_terminal(),
            progress_shown: false,
        }
    }

    /// On a terminal (human format only): one line on stderr, rewritten in place, saying how
    /// far the run is — `[4/9 steps] running: build, test`.
    fn show_progress(&mut self, snap: &taskrunner_runtime::RunSnapshot) {
        if !self.tty || self.output.ndjson || !std::io::stderr().is_terminal() {
            return;
        }
        let leaves: Vec<_> = snap
            .view
            .steps
            .iter()
            .filter(|s| s.kind == "Run" || s.kind.starts_with("Gate"))
            .collect();
        let done = leaves.iter().filter(|s| s.status.is_finished()).count();
        let running: Vec<&str> = leaves
            .iter()
            .filter(|s| {
                s.status == StepStatus::Running
                    || s.status_reason.as_deref() == Some("awaiting-approval")
            })
            .map(|s| s.step_id.as_str())
            .take(4)
            .collect();
        let mut line = format!(
            "[{done}/{} steps] {}",
            leaves.len(),
            snap.view.status.as_str()
        );
        if !running.is_empty() {
            line.push_str(&format!(" · {}", running.join(", ")));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\u{1b}[2K{line}");
        let _ = err.flush();
        self.progress_shown = true;
    }

    fn clear_progress(&mut self) {
        if self.progress_shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\u{1b}[2K");
            let _ = err.flush();
            self.progress_shown = false;
        }
    }

    /// Prints entries after `after` from the store; returns the last sequence printed.
    async fn print_new(&mut self, rt: &Runtime, run_id: &str, mut after: u64) -> Result<u64> {
        loop {
            let batch = rt.logs(&self.tenant, run_id, after, 1000).await?;
            if batch.is_empty() {
                return Ok(after);
            }
            let mut out = std::io::stdout().lock();
            for record in &batch {
                let line = if self.output.ndjson {
                    taskrunner_runtime::log_entry_json(record).to_string()
                } else {
                    self.human(record)
                };
                if writeln!(out, "{line}").is_err() {
                    return Ok(after); // closed pipe: keep running, stop printing
                }
                after = record.sequence;
            }
            let _ = out.flush();
        }
    }

    fn human(&self, record: &LogRecord) -> String {
        let time = Timestamp(record.timestamp_ms).to_rfc3339();
        let clock = time.get(11..19).unwrap_or(&time);
        let step = record.step_id.as_deref().unwrap_or("");
        // A step must not drive the terminal: control characters are shown escaped.
        let message: String = record
            .message
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        let record = LogRecord {
            message,
            ..record.clone()
        };
        match record.event_type.as_str() {
            "step.output" => format!("{clock}   {step} | {}", record.message),
            _ if self.tty => format!(
                "{clock} \u{1b}[1m{:<22}\u{1b}[0m {}",
                record.event_type, record.message
            ),
            _ => format!("{clock} {:<22} {}", record.event_type, record.message),
        }
    }
}
