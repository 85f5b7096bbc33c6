//! Decisions and cancellations for runs another replica drives: journaled here on top of the
//! stored state with optimistic concurrency; the store wakes the holder, which applies them and
//! performs what follows.

use taskrunner_engine::{Command, Event, Journal, Run, RunInfo, RunStatus, Timestamp};
use taskrunner_store::{NewLog, StoreError, Transition};

use crate::api::{DecisionOutcome, DecisionRequest};
use crate::decision::{check_grants, decision_error, decision_on_terminal};
use crate::error::RuntimeError;
use crate::output::{capture_outputs, splice_before_end};
use crate::records::{to_entry, to_new_log};
use crate::runtime::Runtime;
use crate::writer::RunWriter;

/// Attempts to journal a decision or cancellation for a run another replica drives while that
/// replica keeps appending (optimistic concurrency).
pub(crate) const FOREIGN_TRIES: usize = 8;

/// Journaling for runs held elsewhere.
impl Runtime {
    /// A decision on a run another replica drives: journaled here on top of the stored state
    /// with optimistic concurrency (retried on a conflict); the store wakes the holder, which
    /// applies it and starts what follows. Rule 16 checks and answers are the driver's.
    pub(crate) async fn decide_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.shared.load_existing(tenant, run_id).await?;
            if run.is_terminal() {
                return decision_on_terminal(&run, approval_id, &request);
            }
            let check = run.check_decision(
                approval_id,
                request.decision,
                &request.actor,
                &request.plan_hash,
            );
            check_grants(&run, approval_id, &check, request.caller_scopes.as_ref())?;
            let check = check.map_err(decision_error)?;
            let outcome = DecisionOutcome {
                status: request.decision,
                resumed: check.resume,
            };
            if check.already_applied {
                return Ok(outcome);
            }
            let event = Event::ApprovalDecided {
                approval_id: approval_id.to_owned(),
                decision: request.decision,
                actor: request.actor.clone(),
                summary: request.summary.clone(),
                plan_hash: request.plan_hash.clone(),
            };
            match self.commit_elsewhere(&mut run, &mut journal, event).await {
                Ok(()) => return Ok(outcome),
                Err(RuntimeError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Internal(format!(
            "run {run_id} kept changing while its decision was journaled"
        )))
    }

    /// A cancellation of a run another replica drives (see [`Runtime::decide_elsewhere`]).
    pub(crate) async fn cancel_elsewhere(
        &self,
        tenant: &str,
        run_id: &str,
        actor: Option<String>,
    ) -> Result<RunStatus, RuntimeError> {
        for _ in 0..FOREIGN_TRIES {
            let (mut run, mut journal) = self.shared.load_existing(tenant, run_id).await?;
            match run.status() {
                RunStatus::Cancelled => return Ok(RunStatus::Cancelled),
                s if s.is_terminal() => {
                    return Err(RuntimeError::RunTerminal(s.as_str().to_owned()));
                }
                _ => {}
            }
            let event = Event::CancelRequested {
                actor: actor.clone(),
            };
            match self.commit_elsewhere(&mut run, &mut journal, event).await {
                Ok(()) => return Ok(run.status()),
                Err(RuntimeError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RuntimeError::Internal(format!(
            "run {run_id} kept changing while its cancellation was journaled"
        )))
    }

    /// Folds `event` into a run loaded from the store and commits it unfenced with the loaded
    /// journal length expected (`Conflict` when the run moved on). Commands are left to the
    /// holder, which the store wakes; outputs of a run this ends are captured here.
    async fn commit_elsewhere(
        &self,
        run: &mut Run,
        journal: &mut Journal,
        event: Event,
    ) -> Result<(), RuntimeError> {
        let secrets = self.shared.resolve_secrets(run.plan()).secrets;
        let last = run.state().updated_at;
        let at = Timestamp(self.shared.clock.now().millis().max(last.millis()));
        let commands = run.apply(at, &event, &secrets);
        let record = journal.append(at, event.masked(&secrets));
        let mut logs: Vec<NewLog> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(entry) => Some(to_new_log(entry)),
                _ => None,
            })
            .collect();
        let info = RunInfo {
            run_id: run.state().run_id.clone(),
            tenant: run.state().tenant.clone(),
        };
        // Unfenced: this replica does not hold the run's lease; the expected journal length
        // guards the write instead.
        let writer = RunWriter::plain(&self.shared.stores, &info.tenant, &info.run_id);
        if let Some(outputs) = commands.iter().find_map(|c| match c {
            Command::Finished { outputs, .. } => Some(outputs.clone()),
            _ => None,
        }) {
            let workspace = self.shared.workspace_of(&info);
            let failures = capture_outputs(
                &self.shared,
                &writer,
                &info.tenant,
                &info.run_id,
                &workspace,
                outputs,
                &secrets,
            )
            .await;
            splice_before_end(&mut logs, failures);
        }
        let transition = Transition {
            tenant: info.tenant.clone(),
            run_id: info.run_id.clone(),
            expected_journal_len: record.seq - 1,
            journal: vec![to_entry(&record)?],
            logs,
            status: Some(run.status().as_str().to_owned()),
            updated_at_ms: at.millis(),
            next_wake_at_ms: Some(run.next_wake().map(Timestamp::millis)),
            snapshot: None,
        };
        writer.commit(transition).await?;
        metrics::counter!("taskrunner_foreign_commits_total").increment(1);
        Ok(())
    }
}
