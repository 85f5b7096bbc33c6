//! One run's driver (SPEC §5, §6.2): the actor loop. Events for one run are applied in order
//! by its actor, which **persists every transition before acting on it**. This module owns the
//! driver's life: its mailbox, retiring from memory when the run parks or ends, and (as a
//! replica) giving its lease up. Applying and committing events is in `commit`, performing the
//! engine's commands in `perform`.

mod commit;
mod perform;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use taskrunner_engine::{Event, Journal, Run, RunInfo, RunStatus, Secrets};
use taskrunner_store::{LogRecord, Release, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::api::{DecisionOutcome, DecisionRequest, RunSnapshot};
use crate::error::RuntimeError;
use crate::registry::{ActorHandle, Registration, Registry};
use crate::replica::{Claimed, Deadline, takeover_hold, watch_deadline};
use crate::shared::Shared;
use crate::writer::RunWriter;

/// Capacity of a run's mailbox.
pub(crate) const MAILBOX_CAPACITY: usize = 256;

/// A message to a run's driver.
pub(crate) enum Msg {
    Event(Event),
    Decide {
        approval_id: String,
        request: DecisionRequest,
        reply: oneshot::Sender<Result<DecisionOutcome, RuntimeError>>,
    },
    Cancel {
        actor: Option<String>,
        reply: oneshot::Sender<Result<RunStatus, RuntimeError>>,
    },
    /// Another replica journaled something for this run: apply it and perform what follows.
    Sync,
}

/// Why a driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The runtime shuts down (its lease handed off).
    Shutdown,
    /// Its lease was lost (stopped by the renewer, or a fenced write was refused).
    LeaseLost,
    /// A storage failure: its memory may be ahead of the store (lease handed off).
    Failed,
}

/// One run's driver.
pub(crate) struct Actor {
    /// Its id in the registry.
    id: u64,
    /// Cancelled when its lease is lost (or the runtime shuts down).
    stop: CancellationToken,
    /// When its lease was taken, in the clock's monotonic time.
    claimed_at: Duration,
    /// Kills its attempts' process groups at once (its lease was lost, see
    /// [`crate::replica::lose`]); every attempt's cancellation token is a child of it.
    kill: CancellationToken,
    /// Its lease's local deadline (replicas only).
    deadline: Arc<Deadline>,
    /// How long to wait before processing anything: a replica that took the run over with
    /// attempts running waits out the previous holder's lease (see
    /// [`crate::replica::takeover_hold`]).
    hold: Duration,
    /// Ends its deadline watchdog when the driver ends.
    _watchdog: Option<DropGuard>,
    /// Another driver of the run wrote records this one did not (see [`Actor::sync`]).
    superseded: bool,
    shared: Arc<Shared>,
    /// Its place in the registry; dropped when the driver task ends.
    registration: Registration,
    /// Where its writes go: fenced with the lease it drives under (replicas only).
    writer: RunWriter,
    run: Run,
    journal: Journal,
    secrets: Secrets,
    /// The same values, for executors to mask output lines with.
    secret_values: Vec<String>,
    workspace: PathBuf,
    tx: mpsc::Sender<Msg>,
    logs: broadcast::Sender<LogRecord>,
    snapshot: watch::Sender<RunSnapshot>,
    running: BTreeMap<(String, u32), CancellationToken>,
    timer: Option<tokio::task::JoinHandle<()>>,
    finished: bool,
}

/// Starts a driver for `run` (under the `claimed` lease as a replica), registered in
/// `registry`; the caller sends it its first message. A replica's driver gets a watchdog on its
/// lease's local deadline, and waits out the previous holder's lease first if attempts were
/// running.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    registry: &Arc<Registry>,
    run: Run,
    journal: Journal,
    claimed: Option<Claimed>,
    first: Option<Event>,
) -> Result<ActorHandle, RuntimeError> {
    let hold = match (&claimed, shared.replica()) {
        (Some(_), Some(replica)) => takeover_hold(&run, &replica.config),
        _ => Duration::ZERO,
    };
    let (lease, deadline) = match claimed {
        Some(c) => (Some(c.lease), Deadline::at(c.deadline)),
        None => (None, Deadline::never()),
    };
    let info = RunInfo {
        run_id: run.state().run_id.clone(),
        tenant: run.state().tenant.clone(),
    };
    let workspace = shared.workspace_of(&info);
    std::fs::create_dir_all(&workspace).map_err(|e| {
        RuntimeError::Internal(format!(
            "cannot create workspace {}: {e}",
            workspace.display()
        ))
    })?;
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (logs, _) = broadcast::channel(shared.config.log_broadcast_capacity.max(16));
    let resolved = shared.resolve_secrets(run.plan());
    let snapshot = RunSnapshot {
        view: run.view(),
        running_attempts: 0,
        next_wake: run.next_wake(),
        fresh: true,
    };
    let (snap_tx, snap_rx) = watch::channel(snapshot);
    let id = registry.next_id();
    let stop = shared.shutdown.child_token();
    let handle = ActorHandle {
        id,
        tx: tx.clone(),
        logs: logs.clone(),
        snapshot: snap_rx,
        stop: stop.clone(),
        kill: CancellationToken::new(),
        lease: lease.clone(),
        claimed_at: shared.clock.monotonic(),
        deadline: deadline.clone(),
    };
    let watchdog = lease.as_ref().map(|_| {
        let ended = CancellationToken::new();
        tokio::spawn(watch_deadline(
            shared.clock.clone(),
            registry.clone(),
            deadline.clone(),
            handle.loser(&(info.tenant.clone(), info.run_id.clone())),
            ended.clone(),
        ));
        ended.drop_guard()
    });
    let writer = shared.writer(&info.tenant, &info.run_id, lease);
    let registration =
        registry.register((info.tenant.clone(), info.run_id.clone()), handle.clone());
    let actor = Actor {
        id,
        stop,
        claimed_at: handle.claimed_at,
        kill: handle.kill.clone(),
        deadline,
        hold,
        _watchdog: watchdog,
        superseded: false,
        shared: shared.clone(),
        registration,
        writer,
        run,
        journal,
        secrets: resolved.secrets,
        secret_values: resolved.values,
        workspace,
        tx,
        logs,
        snapshot: snap_tx,
        running: BTreeMap::new(),
        timer: None,
        finished: false,
    };
    tracing::debug!(
        tenant = %info.tenant,
        run_id = %info.run_id,
        driver = id,
        fencing_token = ?handle.lease.as_ref().map(|l| l.fencing_token),
        journal_len = handle.snapshot.borrow().view.steps.len(),
        "driver started"
    );
    tokio::spawn(actor.run(rx, first));
    Ok(handle)
}

impl Actor {
    fn info(&self) -> RunInfo {
        RunInfo {
            run_id: self.run.state().run_id.clone(),
            tenant: self.run.state().tenant.clone(),
        }
    }

    /// The driver's loop. `first` (`Started` or `Recovered`) is applied before anything else,
    /// timers included: an overdue retry timer of a recovered run must not start an attempt
    /// that `Recovered` would then mark interrupted (the step would run twice).
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, first: Option<Event>) {
        let shutdown = self.shared.shutdown.clone();
        let mut first = first.map(Msg::Event);
        let mut armed = first.is_none();
        if armed && let Some(at) = self.run.next_wake() {
            self.arm(at);
        }
        if !self.hold.is_zero() {
            tracing::info!(
                run_id = %self.run.state().run_id,
                hold_ms = u64::try_from(self.hold.as_millis()).unwrap_or(u64::MAX),
                "replica: run taken over with attempts running; waiting out the previous \
                 holder's lease before retrying them"
            );
            tokio::select! {
                () = self.shared.clock.sleep(self.hold) => {}
                () = self.stop.cancelled() => {}
            }
        }
        let end = loop {
            let msg = match first.take() {
                Some(msg) => Some(msg),
                None => tokio::select! {
                    biased;
                    () = self.stop.cancelled() => None,
                    msg = rx.recv() => msg,
                },
            };
            let Some(msg) = msg else {
                break if shutdown.is_cancelled() || self.writer.lease().is_none() {
                    End::Shutdown
                } else {
                    End::LeaseLost
                };
            };
            if let Err(e) = self.process(msg).await {
                // The in-memory state may be ahead of the store: stop this driver; the run is
                // recovered from its journal when it is next needed.
                tracing::error!(error = %e, run_id = %self.run.state().run_id, "run driver stopped");
                break self.end_after(&e);
            }
            if !armed {
                armed = true;
                if let Some(at) = self.run.next_wake() {
                    self.arm(at);
                }
            }
            // Retiring may process messages that raced in; they can make the run retirable
            // again (a decision that ends it), so check until it is not.
            while self.retirable() && !self.stop.is_cancelled() {
                match self.retire(rx).await {
                    Some(next) => rx = next,
                    None => return,
                }
            }
        };
        self.unregister();
        self.give_up(end).await;
    }

    /// How a driver that failed with `e` ends: a refused fenced write or another driver's
    /// records mean the run is driven elsewhere (nothing released).
    fn end_after(&self, e: &RuntimeError) -> End {
        if self.superseded || matches!(e, RuntimeError::Store(StoreError::StaleFencingToken { .. }))
        {
            End::LeaseLost
        } else {
            End::Failed
        }
    }

    /// Releases the lease as `end` asks: nothing when it was lost, `Handoff` when the run still
    /// needs a driver now (shutdown, failure).
    async fn give_up(&mut self, end: End) {
        let (Some(replica), Some(lease)) = (self.shared.replica(), self.writer.lease()) else {
            return;
        };
        let mode = match end {
            End::LeaseLost => return,
            End::Shutdown | End::Failed => Release::Handoff,
        };
        if let Err(e) = replica.leases.release(lease, mode).await {
            tracing::debug!(error = %e, run_id = %lease.run_id, "replica: release failed");
        }
    }

    /// Replicas, when the run parks: releases the lease (`Park`), then looks once more for
    /// records another replica journaled meanwhile (a decision that raced the release). If
    /// there are some and the run can be claimed back, returns `true`: the driver carries on
    /// and applies them.
    async fn release_parked(&mut self) -> bool {
        let Some(replica) = self.shared.replica() else {
            return false;
        };
        let Some(lease) = self.writer.lease().cloned() else {
            return false;
        };
        if let Err(e) = replica.leases.release(&lease, Release::Park).await {
            tracing::debug!(error = %e, run_id = %lease.run_id, "replica: release failed");
            return false;
        }
        if self.finished {
            return false;
        }
        let have = self.journal.next_seq() - 1;
        let newer = self
            .shared
            .stores
            .runs
            .load_journal(&lease.tenant, &lease.run_id, have)
            .await
            .is_ok_and(|entries| !entries.is_empty());
        if !newer {
            return false;
        }
        let ticket = replica
            .claims
            .begin(self.shared.clock.monotonic(), replica.config.lease_ttl);
        let claimed = replica
            .leases
            .claim_run(
                &replica.config.owner,
                &lease.tenant,
                &lease.run_id,
                replica.config.lease_ttl,
            )
            .await;
        let Ok(Some(lease)) = claimed else {
            return false;
        };
        let Some(claim) = ticket.answered(&[lease]).pop() else {
            return false;
        };
        replica.claims.take(&claim.lease);
        if self.shared.clock.monotonic() >= claim.deadline {
            return false; // answered too late: another replica may hold it already
        }
        self.deadline.reset(claim.deadline);
        self.writer.set_lease(claim.lease);
        self.claimed_at = self.shared.clock.monotonic();
        true
    }

    /// Finished, or parked at a gate with nothing running and no retry pending: the run needs
    /// no memory until a decision (or a due timer, found by the store query) brings it back.
    fn retirable(&self) -> bool {
        self.running.is_empty() && (self.finished || self.snapshot.borrow().is_parked())
    }

    /// Leaves memory. Messages that raced in are still processed: then the driver carries on
    /// under a fresh mailbox (returned).
    async fn retire(&mut self, mut rx: mpsc::Receiver<Msg>) -> Option<mpsc::Receiver<Msg>> {
        let registry = self.registration.registry().clone();
        let guard = registry.hydrate_lock().await;
        self.unregister();
        rx.close();
        let mut pending = Vec::new();
        while let Some(msg) = rx.recv().await {
            pending.push(msg);
        }
        if pending.is_empty() {
            if !self.release_parked().await {
                return None;
            }
            pending.push(Msg::Sync);
        }
        let (tx, next) = mpsc::channel(MAILBOX_CAPACITY);
        self.tx = tx.clone();
        let handle = ActorHandle {
            id: self.id,
            tx,
            logs: self.logs.clone(),
            snapshot: self.snapshot.subscribe(),
            stop: self.stop.clone(),
            kill: self.kill.clone(),
            lease: self.writer.lease().cloned(),
            claimed_at: self.claimed_at,
            deadline: self.deadline.clone(),
        };
        self.registration.reinstate(handle);
        drop(guard);
        if let Some(at) = self.run.next_wake() {
            self.arm(at);
        }
        for msg in pending {
            if let Err(e) = self.process(msg).await {
                tracing::error!(error = %e, run_id = %self.run.state().run_id, "run driver stopped");
                self.unregister();
                let end = self.end_after(&e);
                self.give_up(end).await;
                return None;
            }
        }
        Some(next)
    }

    /// Kills its attempts, stops its timer and leaves the registry.
    fn unregister(&mut self) {
        for token in self.running.values() {
            token.cancel();
        }
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        self.registration.withdraw();
    }

    /// Handles one message.
    async fn process(&mut self, msg: Msg) -> Result<(), RuntimeError> {
        match msg {
            Msg::Event(event) => self.handle(event).await,
            Msg::Decide {
                approval_id,
                request,
                reply,
            } => {
                let answer = self.decide(&approval_id, request).await;
                reply_then_continue(reply, answer, "decision")
            }
            Msg::Cancel { actor, reply } => {
                let answer = match self.run.status() {
                    RunStatus::Cancelled => Ok(RunStatus::Cancelled),
                    s if s.is_terminal() => Err(RuntimeError::RunTerminal(s.as_str().to_owned())),
                    _ => self
                        .handle_for_caller(Event::CancelRequested { actor })
                        .await
                        .map(|()| self.run.status()),
                };
                reply_then_continue(reply, answer, "cancellation")
            }
            Msg::Sync => self.sync().await,
        }
    }
}

/// Answers a caller; a storage failure also stops the driver (its memory may be ahead of the
/// store), any other refusal — and a store that cannot take writes now, after which the run
/// was left as before the event — leaves it running.
fn reply_then_continue<T>(
    reply: oneshot::Sender<Result<T, RuntimeError>>,
    answer: Result<T, RuntimeError>,
    what: &str,
) -> Result<(), RuntimeError> {
    let failed = match &answer {
        Err(RuntimeError::Store(e)) => !e.is_transient(),
        Err(RuntimeError::Internal(_)) => true,
        _ => false,
    };
    let _ = reply.send(answer);
    if failed {
        Err(RuntimeError::Internal(format!(
            "{what} could not be stored"
        )))
    } else {
        Ok(())
    }
}
