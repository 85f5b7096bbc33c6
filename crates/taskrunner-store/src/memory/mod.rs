//! `MemoryStore`: the in-memory adapter of all three ports (tests, simulations, `--ephemeral`).
//!
//! One mutex guards all state, so every operation is atomic and linearisable; nothing is
//! durable. It follows exactly the rules of the durable adapters (it runs the same conformance
//! suite), including validation before writing and after reading.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;

use crate::cursor::{Cursor, page_limit};
use crate::error::StoreError;
use crate::lease::{self, Lease, LeaseState, WakeHub};
use crate::ports::{COMMIT_MANY_MAX, RunStore, StoreFuture};
use crate::records::{
    ArtifactRecord, JournalEntry, ListQuery, LogRecord, NewLog, NewRun, Page, RunRecord,
    Transition, status,
};
use crate::validate;

mod artifacts;
mod leases;

type Key = (String, String);

#[derive(Debug)]
struct RunState {
    record: RunRecord,
    journal: Vec<JournalEntry>,
    logs: Vec<LogRecord>,
    artifacts: Vec<ArtifactRecord>,
    lease: LeaseState,
}

#[derive(Debug, Default)]
struct State {
    runs: BTreeMap<Key, RunState>,
    /// `(tenant, created_at_ms, run_id)` for newest-first listing.
    by_created: BTreeSet<(String, i64, String)>,
    blobs: BTreeMap<String, Arc<Vec<u8>>>,
}

/// The lease clock of a [`MemoryStore`]: milliseconds since the Unix epoch.
type TimeSource = Arc<dyn Fn() -> i64 + Send + Sync>;

/// In-memory implementation of [`RunStore`], [`LogStore`] and [`ArtifactStore`].
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    wake: WakeHub,
    /// The clock leases are timed by.
    time: TimeSource,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_time(lease::system_now_ms)
    }
}

impl MemoryStore {
    /// An empty store whose leases are timed by this host's wall clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose leases are timed by `time` (ms since the Unix epoch), so that a
    /// test can expire leases on a clock it controls (e.g. tokio's paused clock).
    pub fn with_time(time: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        MemoryStore {
            state: Arc::default(),
            wake: WakeHub::default(),
            time: Arc::new(time),
        }
    }

    /// Now, on the lease clock.
    fn now_ms(&self) -> i64 {
        (self.time)()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // A poisoned lock means a panic while mutating: the state may be half-written.
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".to_owned()))
    }
}

fn ready<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreFuture<'a, T> {
    futures::future::ready(result).boxed()
}

fn key(tenant: &str, run_id: &str) -> Key {
    (tenant.to_owned(), run_id.to_owned())
}

impl State {
    fn create(&mut self, run: NewRun) -> Result<(), StoreError> {
        let k = key(&run.tenant, &run.run_id);
        if self.runs.contains_key(&k) {
            return Err(StoreError::RunExists);
        }
        let logs = run
            .logs
            .into_iter()
            .zip(1u64..)
            .map(|(log, seq)| LogRecord::from_new(seq, log))
            .collect();
        let record = RunRecord {
            tenant: run.tenant.clone(),
            run_id: run.run_id.clone(),
            pack_name: run.pack_name,
            pack_version: run.pack_version,
            plan_hash: run.plan_hash,
            plan_json: run.plan_json,
            created_at_ms: run.created_at_ms,
            updated_at_ms: run.created_at_ms,
            status: run.status,
            next_wake_at_ms: None,
            journal_len: run.journal.len() as u64,
            journal_head: run.journal.last().map(|e| e.hash.clone()),
            host_digest: run.host_digest,
            snapshot: None,
        };
        self.by_created
            .insert((run.tenant, run.created_at_ms, run.run_id));
        self.runs.insert(
            k,
            RunState {
                record,
                journal: run.journal,
                logs,
                artifacts: run.artifacts,
                lease: LeaseState::default(),
            },
        );
        Ok(())
    }

    fn run_mut(&mut self, tenant: &str, run_id: &str) -> Result<&mut RunState, StoreError> {
        self.runs
            .get_mut(&key(tenant, run_id))
            .ok_or(StoreError::NotFound)
    }

    fn run(&self, tenant: &str, run_id: &str) -> Result<&RunState, StoreError> {
        self.runs
            .get(&key(tenant, run_id))
            .ok_or(StoreError::NotFound)
    }

    fn commit(&mut self, t: Transition, fence: Option<&Lease>) -> Result<Vec<u64>, StoreError> {
        validate::transition(&t)?;
        let run = self.run_mut(&t.tenant, &t.run_id)?;
        fenced(run, fence)?;
        let actual = run.record.journal_len;
        if actual != t.expected_journal_len {
            return Err(StoreError::Conflict {
                expected: t.expected_journal_len,
                actual,
            });
        }
        validate::journal_append(&t.journal, actual, run.record.journal_head.as_deref())?;
        let new_len = validate::journal_len_after(&t);
        let head = validate::journal_head_after(&t, run.record.journal_head.take());
        run.record.journal_len = new_len;
        run.record.journal_head = head;
        run.journal.extend(t.journal);
        let seqs = append(&mut run.logs, t.logs);
        if let Some(s) = t.status {
            run.record.status = s;
        }
        run.record.updated_at_ms = t.updated_at_ms;
        if let Some(wake) = t.next_wake_at_ms {
            run.record.next_wake_at_ms = wake;
        }
        if let Some(snap) = t.snapshot {
            run.record.snapshot = Some(snap);
        }
        Ok(seqs)
    }
}

/// Checks the fence of a holder's commit; an unfenced commit (a non-holder's) unparks the run.
fn fenced(run: &mut RunState, fence: Option<&Lease>) -> Result<(), StoreError> {
    match fence {
        Some(lease) => run.lease.fence(lease),
        None => {
            run.lease.parked = false;
            Ok(())
        }
    }
}

impl State {
    fn append_logs(
        &mut self,
        tenant: &str,
        run_id: &str,
        logs: Vec<NewLog>,
        fence: Option<&Lease>,
    ) -> Result<Vec<u64>, StoreError> {
        let run = self.run_mut(tenant, run_id)?;
        if let Some(lease) = fence {
            run.lease.fence(lease)?;
        }
        Ok(append(&mut run.logs, logs))
    }

    fn upsert(
        &mut self,
        tenant: &str,
        run_id: &str,
        record: ArtifactRecord,
        fence: Option<&Lease>,
    ) -> Result<(), StoreError> {
        let run = self.run_mut(tenant, run_id)?;
        if let Some(lease) = fence {
            run.lease.fence(lease)?;
        }
        let count = run.artifacts.len();
        match run.artifacts.iter_mut().find(|a| a.name == record.name) {
            Some(existing) => *existing = record,
            None if count >= validate::RUN_ARTIFACTS_MAX => {
                return Err(StoreError::Invalid(format!(
                    "more than {} artifacts in one run",
                    validate::RUN_ARTIFACTS_MAX
                )));
            }
            None => run.artifacts.push(record),
        }
        Ok(())
    }

    fn lease_of(run: &RunState, owner: &str) -> Lease {
        Lease {
            tenant: run.record.tenant.clone(),
            run_id: run.record.run_id.clone(),
            owner: owner.to_owned(),
            fencing_token: run.lease.token,
            expires_at_ms: run.lease.expires_at_ms.unwrap_or(0),
        }
    }

    fn take(run: &mut RunState, owner: &str, expires_at_ms: i64) -> Lease {
        run.lease = LeaseState {
            owner: Some(owner.to_owned()),
            token: run.lease.token + 1,
            expires_at_ms: Some(expires_at_ms),
            parked: false,
        };
        Self::lease_of(run, owner)
    }
}

fn append(logs: &mut Vec<LogRecord>, new: Vec<NewLog>) -> Vec<u64> {
    let first = logs.len() as u64 + 1;
    let seqs: Vec<u64> = (first..first + new.len() as u64).collect();
    logs.extend(
        new.into_iter()
            .zip(first..)
            .map(|(log, seq)| LogRecord::from_new(seq, log)),
    );
    seqs
}

impl RunStore for MemoryStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, ()> {
        let key = (run.tenant.clone(), run.run_id.clone());
        let result = validate::new_run(&run).and_then(|()| self.lock()?.create(run));
        if result.is_ok() {
            self.wake.send(&key.0, &key.1);
        }
        ready(result)
    }

    fn get_run<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
    ) -> StoreFuture<'a, Option<RunRecord>> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            let state = self.lock()?;
            let Some(run) = state.runs.get(&key(tenant, run_id)) else {
                return Ok(None);
            };
            validate::run_record(&run.record)?;
            Ok(Some(run.record.clone()))
        })();
        ready(result)
    }

    fn list_runs<'a>(&'a self, tenant: &'a str, query: ListQuery) -> StoreFuture<'a, Page> {
        let result = (|| {
            validate::tenant(tenant)?;
            let limit = page_limit(query.limit)?;
            let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
            let state = self.lock()?;
            let lower = (tenant.to_owned(), i64::MIN, String::new());
            let upper = match &after {
                Some(c) => (tenant.to_owned(), c.created_at_ms, c.run_id.clone()),
                None => (tenant.to_owned(), i64::MAX, "\u{10ffff}".to_owned()),
            };
            let mut runs = Vec::new();
            let mut more = false;
            for (t, _, run_id) in state.by_created.range(lower..upper).rev() {
                if runs.len() == limit {
                    more = true;
                    break;
                }
                let run = state.run(t, run_id)?;
                validate::run_record(&run.record)?;
                runs.push(run.record.clone());
            }
            let next_cursor = match (more, runs.last()) {
                (true, Some(last)) => Some(
                    Cursor {
                        created_at_ms: last.created_at_ms,
                        run_id: last.run_id.clone(),
                    }
                    .encode(),
                ),
                _ => None,
            };
            Ok(Page { runs, next_cursor })
        })();
        ready(result)
    }

    fn commit(&self, transition: Transition) -> StoreFuture<'_, Vec<u64>> {
        let key = (transition.tenant.clone(), transition.run_id.clone());
        let result = self.lock().and_then(|mut s| s.commit(transition, None));
        if result.is_ok() {
            self.wake.send(&key.0, &key.1);
        }
        ready(result)
    }

    fn commit_many(
        &self,
        transitions: Vec<Transition>,
    ) -> StoreFuture<'_, Vec<Result<Vec<u64>, StoreError>>> {
        let result = (|| {
            if transitions.len() > COMMIT_MANY_MAX {
                return Err(StoreError::Invalid(format!(
                    "more than {COMMIT_MANY_MAX} transitions in one commit_many"
                )));
            }
            let mut state = self.lock()?;
            let mut woken = Vec::new();
            let results: Vec<_> = transitions
                .into_iter()
                .map(|t| {
                    let key = (t.tenant.clone(), t.run_id.clone());
                    let r = state.commit(t, None);
                    if r.is_ok() {
                        woken.push(key);
                    }
                    r
                })
                .collect();
            drop(state);
            for (t, r) in woken {
                self.wake.send(&t, &r);
            }
            Ok(results)
        })();
        ready(result)
    }

    fn load_journal<'a>(
        &'a self,
        tenant: &'a str,
        run_id: &'a str,
        after_seq: u64,
    ) -> StoreFuture<'a, Vec<JournalEntry>> {
        let result = (|| {
            validate::run_key(tenant, run_id)?;
            let state = self.lock()?;
            let run = state.run(tenant, run_id)?;
            let skip = usize::try_from(after_seq).unwrap_or(usize::MAX);
            let entries: Vec<JournalEntry> = run.journal.iter().skip(skip).cloned().collect();
            validate::journal_loaded(&entries, after_seq)?;
            Ok(entries)
        })();
        ready(result)
    }

    fn active_runs(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        let result = self.lock().map(|state| {
            state
                .runs
                .iter()
                .filter(|(_, r)| status::is_active(&r.record.status))
                .map(|(k, _)| k.clone())
                .collect()
        });
        ready(result)
    }

    fn due_runs(&self, now_ms: i64) -> StoreFuture<'_, Vec<(String, String, i64)>> {
        let result = self.lock().map(|state| {
            let mut due: Vec<(String, String, i64)> = state
                .runs
                .iter()
                .filter(|(_, r)| status::is_active(&r.record.status))
                .filter_map(|((t, id), r)| {
                    r.record
                        .next_wake_at_ms
                        .filter(|w| *w <= now_ms)
                        .map(|w| (t.clone(), id.clone(), w))
                })
                .collect();
            due.sort_by(|a, b| (a.2, &a.0, &a.1).cmp(&(b.2, &b.0, &b.1)));
            due
        });
        ready(result)
    }

    fn queued_count<'a>(&'a self, tenant: &'a str, pack_name: &'a str) -> StoreFuture<'a, u64> {
        let result = (|| {
            validate::tenant(tenant)?;
            let state = self.lock()?;
            Ok(state
                .runs
                .values()
                .filter(|r| {
                    r.record.tenant == tenant
                        && r.record.pack_name == pack_name
                        && r.record.status == status::PENDING
                })
                .count() as u64)
        })();
        ready(result)
    }
}
