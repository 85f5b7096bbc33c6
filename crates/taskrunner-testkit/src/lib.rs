//! Dev-only simulation harness for the engine (STYLE habit 14).
//!
//! [`Sim`] owns a fake clock, a scripted executor and a deterministic driver loop: it journals
//! every event (hash chain included), applies it to a [`Run`], performs the commands (a
//! `StartAttempt` schedules its `AttemptFinished` after the scripted duration, `WakeAt`
//! schedules a `Tick`, `CancelAttempt` ends the attempt as `cancelled`), checks invariants
//! after every event, and renders a text trace (`t=… event` then one line per command, and a
//! final table of step states) for snapshot tests. [`invariants`] and [`replay_matches`] are
//! shared with the property tests.
//!
//! [`ManualClock`] is the runtime's clock for tests: tokio's pausable time, a fixed wall start
//! and manual jumps (see [`clock`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value};
use taskrunner_engine::{
    AttemptOutcome, Command, Decision, Event, Journal, JournalRecord, Run, RunInfo, RunStatus,
    Secrets, StepStatus, Timestamp,
};
use taskrunner_plan::Plan;

pub mod clock;

pub use clock::ManualClock;

/// The harness's one error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the pack does not plan: {0}")]
    Plan(String),
    #[error("invariant broken at t={at}: {message}")]
    Invariant { at: String, message: String },
    #[error("the run did not finish within {0} events")]
    Unbounded(usize),
    #[error("replay differs from the live state")]
    ReplayMismatch,
}

/// The instant every simulation starts at: 2025-12-06T10:00:00Z.
pub const T0: Timestamp = Timestamp(1_765_015_200_000);
/// Events a simulation may process before it is declared stuck.
pub const SIM_EVENTS_MAX: usize = 5_000;
/// How long a cancelled attempt takes to stop.
pub const CANCEL_DELAY_MS: i64 = 200;
/// Default attempt duration.
pub const DURATION_MS_DEFAULT: i64 = 1_000;

/// One scripted attempt: how it ends and how long it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scripted {
    /// `None` = succeed with the resolved `with` as outputs (like `builtin:noop`).
    pub outcome: Option<AttemptOutcome>,
    pub duration_ms: i64,
}

impl Scripted {
    /// Succeeds (outputs = `with`) after `duration_ms`.
    pub fn ok(duration_ms: i64) -> Scripted {
        Scripted {
            outcome: None,
            duration_ms,
        }
    }

    /// Succeeds with these outputs.
    pub fn outputs(duration_ms: i64, outputs: Value) -> Scripted {
        let map = match outputs {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Scripted {
            outcome: Some(AttemptOutcome::Succeeded { outputs: map }),
            duration_ms,
        }
    }

    /// Fails with `reason` (e.g. `exit-code`).
    pub fn fail(duration_ms: i64, reason: &str) -> Scripted {
        Scripted {
            outcome: Some(AttemptOutcome::Failed {
                reason: reason.to_owned(),
                message: format!("scripted {reason}"),
            }),
            duration_ms,
        }
    }
}

enum Queued {
    Event(Event),
    Finish { step: String, attempt: u32 },
    Crash,
}

/// A deterministic simulation of one run.
pub struct Sim {
    run: Run,
    info: RunInfo,
    journal: Journal,
    records: Vec<JournalRecord>,
    secrets: Secrets,
    now: Timestamp,
    queue: BTreeMap<(i64, u64), Queued>,
    next_key: u64,
    in_flight: BTreeMap<(String, u32), ((i64, u64), AttemptOutcome)>,
    scripts: BTreeMap<String, Vec<Scripted>>,
    finished: Vec<(RunStatus, usize)>,
    trace: String,
    max_running: BTreeMap<String, usize>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("status", &self.run.status())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Plans `yaml` with `inputs` (a JSON object) and creates the run at [`T0`].
    pub fn new(yaml: &str, inputs: Value) -> Result<Sim, Error> {
        let inputs = match inputs {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let plan = taskrunner_plan::plan_yaml(yaml, &inputs)
            .map_err(|e| Error::Plan(e.to_response().to_string()))?;
        Ok(Sim::from_plan(Arc::new(plan)))
    }

    /// Creates the run for an existing plan at [`T0`].
    pub fn from_plan(plan: Arc<Plan>) -> Sim {
        let info = RunInfo {
            run_id: "run-1".to_owned(),
            tenant: "acme".to_owned(),
        };
        let journal = Journal::new(plan.hash());
        Sim {
            run: Run::new(plan, info.clone(), T0),
            info,
            journal,
            records: Vec::new(),
            secrets: Secrets::new(),
            now: T0,
            queue: BTreeMap::new(),
            next_key: 0,
            in_flight: BTreeMap::new(),
            scripts: BTreeMap::new(),
            finished: Vec::new(),
            trace: String::new(),
            max_running: BTreeMap::new(),
        }
    }

    /// Adds a secret the host supplies.
    pub fn secret(&mut self, name: &str, value: &str) -> &mut Sim {
        self.secrets.insert(name, value);
        self
    }

    /// Scripts the attempts of a step (by exact id, or by template id for every instance).
    pub fn script(&mut self, step: &str, attempts: Vec<Scripted>) -> &mut Sim {
        self.scripts.insert(step.to_owned(), attempts);
        self
    }

    /// Schedules an external event `ms` after [`T0`].
    pub fn at(&mut self, ms: i64, event: Event) -> &mut Sim {
        self.push(ms, Queued::Event(event));
        self
    }

    /// Schedules an approval decision `ms` after [`T0`] with the run's plan hash.
    pub fn decide(&mut self, ms: i64, approval: &str, decision: Decision, actor: &str) -> &mut Sim {
        let plan_hash = self.run.plan().hash().to_owned();
        self.at(
            ms,
            Event::ApprovalDecided {
                approval_id: approval.to_owned(),
                decision,
                actor: actor.to_owned(),
                summary: None,
                plan_hash,
            },
        )
    }

    /// Simulates a process crash `ms` after [`T0`]: attempts in flight and timers are lost,
    /// the run is rebuilt from its journal, and `Recovered` is applied.
    pub fn crash_at(&mut self, ms: i64) -> &mut Sim {
        self.push(ms, Queued::Crash);
        self
    }

    fn push(&mut self, ms: i64, q: Queued) -> (i64, u64) {
        let key = (T0.0 + ms, self.next_key);
        self.next_key += 1;
        self.queue.insert(key, q);
        key
    }

    fn push_abs(&mut self, at: Timestamp, q: Queued) -> (i64, u64) {
        self.push(at.0 - T0.0, q)
    }

    /// The run.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// The journal so far.
    pub fn records(&self) -> &[JournalRecord] {
        &self.records
    }

    /// The trace so far (call [`Sim::finish`] first for the final table).
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Runs until nothing is left to do, then appends the final table.
    pub fn finish(&mut self) -> Result<String, Error> {
        self.apply(Event::Started)?;
        let mut count = 0;
        while let Some((key, q)) = self.queue.pop_first() {
            count += 1;
            if count > SIM_EVENTS_MAX {
                return Err(Error::Unbounded(SIM_EVENTS_MAX));
            }
            self.now = Timestamp(key.0.max(self.now.0));
            match q {
                Queued::Event(e) => self.apply(e)?,
                Queued::Finish { step, attempt } => {
                    if let Some((_, outcome)) = self.in_flight.remove(&(step.clone(), attempt)) {
                        self.apply(Event::AttemptFinished {
                            step_id: step,
                            attempt,
                            outcome,
                        })?;
                    }
                }
                Queued::Crash => self.crash()?,
            }
        }
        if !replay_matches(&self.run, &self.info, &self.records, &self.secrets) {
            return Err(Error::ReplayMismatch);
        }
        self.render_final();
        Ok(self.trace.clone())
    }

    fn crash(&mut self) -> Result<(), Error> {
        let _ = writeln!(
            self.trace,
            "{} -- crash: in-flight attempts and timers are lost",
            self.t()
        );
        for (_, (key, _)) in std::mem::take(&mut self.in_flight) {
            self.queue.remove(&key);
        }
        self.queue
            .retain(|_, q| !matches!(q, Queued::Event(Event::Tick)));
        let plan = self.run.plan().clone();
        let rebuilt =
            taskrunner_engine::replay(plan, self.info.clone(), T0, &self.records, &self.secrets)
                .map_err(|e| self.invariant(format!("replay failed: {e}")))?;
        if rebuilt.state() != self.run.state() {
            return Err(self.invariant("replayed state differs before recovery".to_owned()));
        }
        self.run = rebuilt;
        self.apply(Event::Recovered)
    }

    fn t(&self) -> String {
        rel(self.now)
    }

    fn invariant(&self, message: String) -> Error {
        Error::Invariant {
            at: self.t(),
            message,
        }
    }

    fn apply(&mut self, event: Event) -> Result<(), Error> {
        let was_terminal = self.run.is_terminal();
        let event = event.masked(&self.secrets);
        let record = self.journal.append(self.now, event.clone());
        self.records.push(record);
        let cmds = self.run.apply(self.now, &event, &self.secrets);
        let _ = writeln!(self.trace, "{} {}", self.t(), show_event(&event));
        invariants(&self.run, &cmds, was_terminal).map_err(|m| self.invariant(m))?;
        for (step, n) in running_children(&self.run) {
            let e = self.max_running.entry(step).or_default();
            *e = (*e).max(n);
        }
        for cmd in cmds {
            let _ = writeln!(self.trace, "    {}", show_command(&cmd, &self.secrets));
            self.perform(cmd);
        }
        Ok(())
    }

    fn perform(&mut self, cmd: Command) {
        match cmd {
            Command::StartAttempt {
                step_id,
                attempt,
                with,
                timeout_seconds,
                ..
            } => {
                let scripted = self.scripted(&step_id, attempt);
                let mut duration = scripted.duration_ms;
                let mut outcome = scripted
                    .outcome
                    .unwrap_or_else(|| AttemptOutcome::Succeeded {
                        outputs: match with {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        },
                    });
                if let Some(limit) = timeout_seconds
                    && duration
                        > i64::try_from(limit)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000)
                {
                    duration = i64::try_from(limit).unwrap_or(i64::MAX) * 1000;
                    outcome = AttemptOutcome::Failed {
                        reason: "timeout".to_owned(),
                        message: format!("attempt exceeded {limit}s"),
                    };
                }
                let at = Timestamp(self.now.0 + duration.max(0));
                let key = self.push_abs(
                    at,
                    Queued::Finish {
                        step: step_id.clone(),
                        attempt,
                    },
                );
                self.in_flight.insert((step_id, attempt), (key, outcome));
            }
            Command::CancelAttempt { step_id, attempt } => {
                if let Some((key, _)) = self.in_flight.remove(&(step_id.clone(), attempt)) {
                    self.queue.remove(&key);
                    let at = Timestamp(self.now.0 + CANCEL_DELAY_MS);
                    let key = self.push_abs(
                        at,
                        Queued::Finish {
                            step: step_id.clone(),
                            attempt,
                        },
                    );
                    self.in_flight.insert(
                        (step_id, attempt),
                        (
                            key,
                            AttemptOutcome::Failed {
                                reason: "cancelled".to_owned(),
                                message: "stopped".to_owned(),
                            },
                        ),
                    );
                }
            }
            Command::WakeAt(t) => {
                let exists = self
                    .queue
                    .iter()
                    .any(|(k, q)| k.0 == t.0 && matches!(q, Queued::Event(Event::Tick)));
                if !exists {
                    self.push_abs(t.max(self.now), Queued::Event(Event::Tick));
                }
            }
            Command::Log(_) => {}
            Command::Finished { status, outputs } => {
                self.finished.push((status, outputs.len()));
            }
        }
    }

    fn scripted(&self, step_id: &str, attempt: u32) -> Scripted {
        let template = step_id.rsplit("::").next().unwrap_or(step_id);
        let list = self
            .scripts
            .get(step_id)
            .or_else(|| self.scripts.get(template));
        list.and_then(|l| l.get(attempt.saturating_sub(1) as usize).or(l.last()))
            .cloned()
            .unwrap_or(Scripted::ok(DURATION_MS_DEFAULT))
    }

    /// The most children seen Running at once, per parallel/map step.
    pub fn max_running(&self) -> &BTreeMap<String, usize> {
        &self.max_running
    }

    /// `Finished` commands seen (status, number of outputs).
    pub fn finished(&self) -> &[(RunStatus, usize)] {
        &self.finished
    }

    fn render_final(&mut self) {
        let view = self.run.view();
        let _ = writeln!(self.trace, "\n== run {}", view.status.as_str());
        let _ = writeln!(
            self.trace,
            "{:<32} {:<13} {:<10} {:<20} {:>3} {:>9} {:>9}",
            "step", "kind", "status", "reason", "att", "last", "next"
        );
        for s in &view.steps {
            let depth = ancestors(&view.steps, s.parent_step_id.as_deref());
            let name = format!("{}{}", "  ".repeat(depth.min(8)), s.step_id);
            let _ = writeln!(
                self.trace,
                "{:<32} {:<13} {:<10} {:<20} {:>3} {:>9} {:>9}",
                name,
                s.kind,
                s.status.as_str(),
                s.status_reason.as_deref().unwrap_or("-"),
                s.attempts,
                s.last_transition_at.map_or("-".to_owned(), rel_short),
                s.next_attempt_at.map_or("-".to_owned(), rel_short),
            );
        }
        if let Some(outputs) = self.run.outputs() {
            for o in outputs {
                let _ = writeln!(
                    self.trace,
                    "output {}",
                    serde_json::to_string(o).unwrap_or_default()
                );
            }
        }
    }
}

fn ancestors(steps: &[taskrunner_engine::StepView], parent: Option<&str>) -> usize {
    let mut depth = 0;
    let mut cur = parent.map(str::to_owned);
    while let Some(p) = cur {
        depth += 1;
        if depth > 64 {
            break;
        }
        cur = steps
            .iter()
            .find(|s| s.step_id == p)
            .and_then(|s| s.parent_step_id.clone());
    }
    depth
}

/// `t=12.500` seconds after [`T0`].
fn rel(t: Timestamp) -> String {
    format!("t={}", rel_short(t))
}

fn rel_short(t: Timestamp) -> String {
    let ms = t.0 - T0.0;
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

fn show_event(e: &Event) -> String {
    match e {
        Event::Started => "Started".to_owned(),
        Event::AttemptFinished {
            step_id,
            attempt,
            outcome,
        } => match outcome {
            AttemptOutcome::Succeeded { outputs } => format!(
                "AttemptFinished {step_id}#{attempt} ok {}",
                Value::Object(outputs.clone())
            ),
            AttemptOutcome::Failed { reason, .. } => {
                format!("AttemptFinished {step_id}#{attempt} failed {reason}")
            }
        },
        Event::ApprovalDecided {
            approval_id,
            decision,
            actor,
            ..
        } => format!(
            "ApprovalDecided {approval_id} {} by {actor}",
            decision.as_str()
        ),
        Event::CancelRequested { actor } => {
            format!("CancelRequested by {}", actor.as_deref().unwrap_or("-"))
        }
        Event::Recovered => "Recovered".to_owned(),
        Event::Tick => "Tick".to_owned(),
    }
}

fn show_command(c: &Command, secrets: &Secrets) -> String {
    match c {
        Command::StartAttempt {
            step_id,
            attempt,
            uses,
            with,
            timeout_seconds,
            idempotency_key,
        } => format!(
            "→ start {step_id}#{attempt} {uses} with={} timeout={} key={idempotency_key}",
            // The trace is a log: mask what a driver would never log.
            secrets.mask(&with.to_string()),
            timeout_seconds.map_or("-".to_owned(), |t| format!("{t}s")),
        ),
        Command::CancelAttempt { step_id, attempt } => format!("→ cancel {step_id}#{attempt}"),
        Command::WakeAt(t) => format!("→ wake {}", rel(*t)),
        Command::Log(l) => {
            let meta: Vec<String> = l.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "→ log {} {}{}{} {:?}",
                l.level.as_str(),
                l.event_type,
                l.step_id
                    .as_deref()
                    .map_or(String::new(), |s| format!(" [{s}]")),
                if meta.is_empty() {
                    String::new()
                } else {
                    format!(" {{{}}}", meta.join(", "))
                },
                l.message
            )
        }
        Command::Finished { status, outputs } => {
            format!("→ finished {} ({} outputs)", status.as_str(), outputs.len())
        }
    }
}

/// Per parallel/map step with a `maxParallel`, how many children are Running now.
pub fn running_children(run: &Run) -> Vec<(String, usize)> {
    let view = run.view();
    view.steps
        .iter()
        .filter(|s| s.max_parallel.is_some())
        .map(|p| {
            let n = view
                .steps
                .iter()
                .filter(|c| {
                    c.parent_step_id.as_deref() == Some(&p.step_id)
                        && c.status == StepStatus::Running
                })
                .count();
            (p.step_id.clone(), n)
        })
        .collect()
}

/// Checks what must hold after every `apply`: no `StartAttempt` once terminal, never more
/// than `maxParallel` children Running, a terminal run has no unfinished step except ones
/// with an attempt still stopping, and `Finished` comes with a terminal status.
pub fn invariants(run: &Run, cmds: &[Command], was_terminal: bool) -> Result<(), String> {
    for c in cmds {
        match c {
            Command::StartAttempt { step_id, .. } if was_terminal || run.is_terminal() => {
                return Err(format!("{step_id} started after the run was terminal"));
            }
            Command::Finished { .. } if !run.is_terminal() => {
                return Err("Finished while the run is not terminal".to_owned());
            }
            Command::Finished { .. } if was_terminal => {
                return Err("Finished twice".to_owned());
            }
            _ => {}
        }
    }
    let view = run.view();
    for s in view.steps.iter().filter(|s| s.max_parallel.is_some()) {
        let max = s.max_parallel.unwrap_or(u32::MAX) as usize;
        let n = view
            .steps
            .iter()
            .filter(|c| {
                c.parent_step_id.as_deref() == Some(&s.step_id) && c.status == StepStatus::Running
            })
            .count();
        if n > max {
            return Err(format!(
                "{} has {n} children Running (max {max})",
                s.step_id
            ));
        }
    }
    if run.is_terminal()
        && run.running_attempts().is_empty()
        && let Some(s) = view.steps.iter().find(|s| !s.status.is_finished())
    {
        return Err(format!(
            "run is {} but {} is {}",
            run.status().as_str(),
            s.step_id,
            s.status.as_str()
        ));
    }
    Ok(())
}

/// Replays the journal and compares the state with the live run (serialised, byte for byte).
pub fn replay_matches(
    run: &Run,
    info: &RunInfo,
    records: &[JournalRecord],
    secrets: &Secrets,
) -> bool {
    let Ok(replayed) =
        taskrunner_engine::replay(run.plan().clone(), info.clone(), T0, records, secrets)
    else {
        return false;
    };
    let a = serde_json::to_string(run.state()).unwrap_or_default();
    let b = serde_json::to_string(replayed.state()).unwrap_or_else(|_| "x".to_owned());
    a == b
}
