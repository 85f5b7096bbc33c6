//! Performing the engine's commands: timers, attempt starts (with their output forwarded to
//! the log) and cancellations.

use std::time::Duration;

use serde_json::{Map, Value};
use taskrunner_engine::{AttemptOutcome, Command, Event, Secrets, Timestamp};
use taskrunner_exec::{ExecOutcome, ExecRequest, NetworkMode, SandboxSpec};
use taskrunner_plan::Plan;
use tokio::sync::mpsc;

use super::{Actor, Msg};
use crate::output::forward_output;

/// Capacity of an attempt's output line channel (back-pressure on the process beyond it).
const OUTPUT_LINES_CAPACITY: usize = 256;

impl Actor {
    pub(super) fn arm(&mut self, at: Timestamp) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        let clock = self.shared.clock.clone();
        let tx = self.tx.clone();
        self.timer = Some(tokio::spawn(async move {
            loop {
                let wait = at.millis().saturating_sub(clock.now().millis());
                if wait <= 0 {
                    break;
                }
                clock
                    .sleep(Duration::from_millis(
                        u64::try_from(wait).unwrap_or(0).min(60_000),
                    ))
                    .await;
            }
            let _ = tx.send(Msg::Event(Event::Tick)).await;
        }));
    }

    pub(super) async fn perform(&mut self, command: Command) {
        match command {
            Command::Log(_) => {} // committed with the transition
            Command::WakeAt(at) => self.arm(at),
            Command::CancelAttempt { step_id, attempt } => {
                if let Some(token) = self.running.get(&(step_id, attempt)) {
                    token.cancel();
                }
            }
            Command::StartAttempt {
                step_id,
                attempt,
                uses,
                with,
                timeout_seconds,
                idempotency_key,
            } => {
                // A lost lease cancels every attempt at once, and kills process groups.
                let token = self.kill.child_token();
                self.running
                    .insert((step_id.clone(), attempt), token.clone());
                let info = self.info();
                let request = ExecRequest {
                    tenant: info.tenant.clone(),
                    run_id: info.run_id.clone(),
                    step_id: step_id.clone(),
                    attempt,
                    idempotency_key,
                    uses: uses.clone(),
                    with,
                    workspace: self.workspace.clone(),
                    timeout: timeout_seconds.map(Duration::from_secs),
                    secrets: self.secret_values.clone(),
                    sandbox: sandbox_spec(self.run.plan()),
                    kill: self.kill.clone(),
                };
                let executor = self.shared.executors.get(&uses);
                let clock = self.shared.clock.clone();
                let writer = self.writer.clone();
                let tx = self.tx.clone();
                let logs = self.logs.clone();
                let stop = self.stop.clone();
                let secrets = self.secrets.clone();
                tokio::spawn(async move {
                    let started = clock.monotonic();
                    let outcome = match executor {
                        Some(executor) => {
                            let (line_tx, line_rx) = mpsc::channel(OUTPUT_LINES_CAPACITY);
                            let forward = tokio::spawn(forward_output(
                                clock.clone(),
                                writer,
                                step_id.clone(),
                                line_rx,
                                logs,
                                stop,
                            ));
                            let outcome = executor.execute(request, line_tx, token).await;
                            // Output lines land in the log before the step's end is recorded.
                            let _ = forward.await;
                            outcome
                        }
                        None => ExecOutcome::failed(
                            "executor-unavailable",
                            format!("executor '{uses}' is not available on this host"),
                        ),
                    };
                    let label = match &outcome {
                        ExecOutcome::Succeeded { .. } => "succeeded",
                        ExecOutcome::Failed { .. } => "failed",
                    };
                    metrics::counter!("taskrunner_step_attempts_total", "outcome" => label)
                        .increment(1);
                    metrics::histogram!(
                        "taskrunner_step_attempt_duration_seconds",
                        "outcome" => label
                    )
                    .record(clock.monotonic().saturating_sub(started).as_secs_f64());
                    let outcome = match outcome {
                        ExecOutcome::Succeeded { outputs } => AttemptOutcome::Succeeded {
                            outputs: mask_map(&secrets, outputs),
                        },
                        ExecOutcome::Failed {
                            reason, message, ..
                        } => AttemptOutcome::Failed {
                            reason,
                            message: secrets.mask(&message),
                        },
                    };
                    let _ = tx
                        .send(Msg::Event(Event::AttemptFinished {
                            step_id,
                            attempt,
                            outcome,
                        }))
                        .await;
                });
            }
            Command::Finished { .. } => {
                // Outputs were captured with the transition (see `handle`).
                self.finished = true;
                if let Some(timer) = self.timer.take() {
                    timer.abort();
                }
            }
        }
    }
}

/// The isolation a plan's `spec.sandbox` asks of every attempt (SPEC §1.6, §7). `quotaSeconds`
/// is not here: the engine already folds it into each attempt's timeout.
fn sandbox_spec(plan: &Plan) -> SandboxSpec {
    let sandbox = plan.sandbox();
    let network = match sandbox.mode {
        taskrunner_plan::SandboxMode::Sealed => NetworkMode::Sealed,
        taskrunner_plan::SandboxMode::Networked => NetworkMode::Shared,
    };
    SandboxSpec::new(network)
        .with_cpu_limit_millicores(
            sandbox
                .cpu_limit_millicores
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
        )
        .with_memory_limit_mib(sandbox.memory_limit_mib)
        .with_egress_allowlist(sandbox.egress_allowlist.clone())
}

fn mask_map(secrets: &Secrets, outputs: Map<String, Value>) -> Map<String, Value> {
    match secrets.mask_value(&Value::Object(outputs)) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
