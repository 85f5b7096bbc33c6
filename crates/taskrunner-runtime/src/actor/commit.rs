//! Applying events: fold into the engine, journal + logs + status in one commit (through the
//! run's writer), then act; and taking in what another replica journaled for the run.

use taskrunner_engine::{Command, Decision, Event, Timestamp};
use taskrunner_store::{LogRecord, NewLog, StoreError, Transition};

use super::Actor;
use crate::api::{DecisionOutcome, DecisionRequest, RunSnapshot};
use crate::decision::{check_grants, decision_error};
use crate::error::RuntimeError;
use crate::output::{capture_outputs, splice_before_end};
use crate::records::{from_entry, to_entry, to_new_log};
use crate::replica::FOREIGN_TRIES;

/// Who an event comes from, which decides what a store that cannot take writes now does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The run itself (attempt ends, timers, recovery): waited out until stored.
    Run,
    /// A client (decision, cancellation): refused, the run left as before.
    Client,
}

impl Actor {
    /// Applies the records another replica journaled after ours (a decision, a cancellation)
    /// and performs what they command — the holder's half of `commit_elsewhere`.
    pub(super) async fn sync(&mut self) -> Result<(), RuntimeError> {
        let info = self.info();
        let have = self.journal.next_seq() - 1;
        let entries = self
            .shared
            .stores
            .runs
            .load_journal(&info.tenant, &info.run_id, have)
            .await?;
        let corrupt = |message: String| RuntimeError::Corrupt {
            run_id: info.run_id.clone(),
            message,
        };
        let records = entries
            .iter()
            .map(from_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        // Only decisions and cancellations are journaled by replicas that do not drive the run.
        // Anything else means another driver of this run wrote: this one stops at once, before
        // performing anything (its lease is no longer the only one acting).
        if let Some(other) = records.iter().find(|r| {
            !matches!(
                r.event,
                Event::ApprovalDecided { .. } | Event::CancelRequested { .. }
            )
        }) {
            self.superseded = true;
            return Err(RuntimeError::Internal(format!(
                "journal record {} of run {} was written by another driver",
                other.seq, info.run_id
            )));
        }
        for record in records {
            let commands = self.run.apply(record.at, &record.event, &self.secrets);
            let ours = self.journal.append(record.at, record.event);
            if ours.seq != record.seq || ours.hash != record.hash {
                return Err(corrupt(format!(
                    "journal record {} written by another replica does not chain onto record {}",
                    record.seq, have
                )));
            }
            for command in commands {
                self.perform(command).await;
            }
        }
        if !entries.is_empty() {
            self.publish();
        }
        Ok(())
    }

    pub(super) async fn decide(
        &mut self,
        approval_id: &str,
        request: DecisionRequest,
    ) -> Result<DecisionOutcome, RuntimeError> {
        let check = self.run.check_decision(
            approval_id,
            request.decision,
            &request.actor,
            &request.plan_hash,
        );
        check_grants(
            &self.run,
            approval_id,
            &check,
            request.caller_scopes.as_ref(),
        )?;
        let check = check.map_err(decision_error)?;
        if !check.already_applied {
            self.record_approval_wait(approval_id, request.decision);
            self.handle_for_caller(Event::ApprovalDecided {
                approval_id: approval_id.to_owned(),
                decision: request.decision,
                actor: request.actor,
                summary: request.summary,
                plan_hash: request.plan_hash,
            })
            .await?;
        }
        Ok(DecisionOutcome {
            status: request.decision,
            resumed: check.resume,
        })
    }

    /// Metrics of a decision on a waiting gate: how long it waited, and whether that broke
    /// the pack's `approvalP95Seconds` target.
    fn record_approval_wait(&self, approval_id: &str, decision: Decision) {
        let now = self.shared.clock.now().millis();
        let waited_since = self.run.view().steps.iter().find_map(|s| {
            (s.approval_id.as_deref() == Some(approval_id)
                && s.status_reason.as_deref() == Some("awaiting-approval"))
            .then_some(s.last_transition_at)
            .flatten()
        });
        let Some(since) = waited_since else { return };
        let waited = (now - since.millis()).max(0) as f64 / 1000.0;
        metrics::histogram!("taskrunner_approval_wait_seconds", "decision" => decision.as_str())
            .record(waited);
        if let Some(target) = self.run.plan().slo().approval_p95_seconds
            && waited > target as f64
        {
            metrics::counter!("taskrunner_slo_breaches_total", "kind" => "approval").increment(1);
        }
    }

    /// Metrics of a run that just finished: status, duration, and the `runP95Seconds` target.
    fn record_finished(&self, at: Timestamp) {
        let status = self.run.status().as_str();
        metrics::counter!("taskrunner_runs_finished_total", "status" => status).increment(1);
        let seconds = (at.millis() - self.run.state().created_at.millis()).max(0) as f64 / 1000.0;
        let pack = self.run.plan().pack().name.clone();
        metrics::histogram!("taskrunner_run_duration_seconds", "pack" => pack).record(seconds);
        if let Some(target) = self.run.plan().slo().run_p95_seconds
            && seconds > target as f64
        {
            metrics::counter!("taskrunner_slo_breaches_total", "kind" => "run").increment(1);
        }
    }

    /// Applies one event the run cannot do without (an attempt ended, a timer fired): fold,
    /// journal + logs + status in one commit, then act. A store that cannot take writes now is
    /// waited out ([`crate::writer::RunWriter::commit_until_stored`]).
    pub(super) async fn handle(&mut self, event: Event) -> Result<(), RuntimeError> {
        self.handle_as(event, Caller::Run).await
    }

    /// Applies an event a caller asked for (a decision, a cancellation). A store that cannot
    /// take writes now refuses it: the run is left as it was before the event and the caller
    /// gets the error (HTTP 503), to try again later.
    pub(super) async fn handle_for_caller(&mut self, event: Event) -> Result<(), RuntimeError> {
        self.handle_as(event, Caller::Client).await
    }

    async fn handle_as(&mut self, event: Event, caller: Caller) -> Result<(), RuntimeError> {
        if self.finished && !matches!(event, Event::AttemptFinished { .. }) {
            return Ok(());
        }
        if let Event::AttemptFinished {
            step_id, attempt, ..
        } = &event
        {
            self.running.remove(&(step_id.clone(), *attempt));
        }
        let mut conflicts = 0;
        loop {
            // A replica keeps the state before the event: another replica may have journaled
            // a decision or cancellation first (`Conflict`), applied, then this event again.
            // A caller's event is undone when the store refuses it for now.
            let before = (self.writer.lease().is_some() || caller == Caller::Client)
                .then(|| (self.run.clone(), self.journal.clone()));
            match self.apply_and_commit(&event, caller).await {
                Err(RuntimeError::Store(e)) if e.is_transient() && caller == Caller::Client => {
                    if let Some((run, journal)) = before {
                        self.run = run;
                        self.journal = journal;
                    }
                    return Err(RuntimeError::Store(e));
                }
                Err(RuntimeError::Store(StoreError::Conflict { .. }))
                    if conflicts < FOREIGN_TRIES =>
                {
                    let Some((run, journal)) = before else {
                        return Err(RuntimeError::Internal(
                            "journal conflict without a lease".into(),
                        ));
                    };
                    conflicts += 1;
                    tracing::debug!(run_id = %self.info().run_id, driver = self.id, "journal conflict: applying what another replica wrote");
                    self.run = run;
                    self.journal = journal;
                    self.sync().await?;
                    if self.finished && !matches!(event, Event::AttemptFinished { .. }) {
                        return Ok(());
                    }
                }
                other => return other,
            }
        }
    }

    /// One try of [`Actor::handle`]: fold, commit, then act.
    async fn apply_and_commit(
        &mut self,
        event: &Event,
        caller: Caller,
    ) -> Result<(), RuntimeError> {
        // Time never goes backwards inside a run, whatever the wall clock does.
        let last = self.run.state().updated_at;
        let at = Timestamp(self.shared.clock.now().millis().max(last.millis()));
        let commands = self.run.apply(at, event, &self.secrets);
        // Secrets never reach the journal (rule 19): journal the masked form.
        let record = self.journal.append(at, event.masked(&self.secrets));
        let mut logs: Vec<NewLog> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(entry) => Some(to_new_log(entry)),
                _ => None,
            })
            .collect();
        // Outputs are captured before the run's end is recorded (SPEC §5.3 "End"), so their
        // `artifact.failed` entries precede `run.completed`/`run.failed`. Capturing twice after
        // a crash is harmless: blobs are content-addressed and records are upserted.
        if let Some(outputs) = commands.iter().find_map(|c| match c {
            Command::Finished { outputs, .. } => Some(outputs.clone()),
            _ => None,
        }) {
            let info = self.info();
            let failures = capture_outputs(
                &self.shared,
                &self.writer,
                &info.tenant,
                &info.run_id,
                &self.workspace,
                outputs,
                &self.secrets,
            )
            .await;
            splice_before_end(&mut logs, failures);
        }
        let info = self.info();
        let transition = Transition {
            tenant: info.tenant.clone(),
            run_id: info.run_id.clone(),
            expected_journal_len: record.seq - 1,
            journal: vec![to_entry(&record)?],
            logs: logs.clone(),
            status: Some(self.run.status().as_str().to_owned()),
            updated_at_ms: at.millis(),
            next_wake_at_ms: Some(self.run.next_wake().map(Timestamp::millis)),
            snapshot: None,
        };
        let sequences = match caller {
            Caller::Client => self.writer.commit(transition).await?,
            Caller::Run => {
                self.writer
                    .commit_until_stored(transition, &*self.shared.clock, &self.stop)
                    .await?
            }
        };
        for (sequence, log) in sequences.into_iter().zip(logs) {
            let _ = self.logs.send(LogRecord::from_new(sequence, log));
        }
        if commands
            .iter()
            .any(|c| matches!(c, Command::Finished { .. }))
        {
            self.record_finished(at);
        }
        for command in commands {
            self.perform(command).await;
        }
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let _ = self.snapshot.send(RunSnapshot {
            view: self.run.view(),
            running_attempts: self.running.len(),
            next_wake: self.run.next_wake(),
            fresh: false,
        });
    }
}
