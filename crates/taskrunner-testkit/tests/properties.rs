//! Property tests: random small packs and random interleavings of executor results, approval
//! decisions, cancellations, crashes and timer firings. The engine never panics, always
//! finishes within a bound, never runs more than `maxParallel` children, never starts a step
//! after the run is terminal, and replaying the journal gives the live state.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use taskrunner_engine::{
    AttemptOutcome, Command, Decision, Event, Journal, JournalRecord, Run, RunInfo, Secrets,
    Timestamp,
};
use taskrunner_testkit::{T0, invariants, replay_matches};

/// A tiny deterministic generator (the proptest seed drives everything).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Gen {
    rng: Rng,
    count: usize,
    run_ids: Vec<String>,
}

impl Gen {
    fn id(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}{}", self.count)
    }

    fn common(&mut self) -> String {
        let mut s = String::new();
        if self.rng.chance(25) {
            s.push_str(&format!(
                ", retries: {{maxAttempts: {}, backoffSeconds: {}}}",
                1 + self.rng.below(3),
                self.rng.below(4)
            ));
        }
        if self.rng.chance(20) {
            s.push_str(", continueOnError: true");
        }
        if self.rng.chance(10) {
            s.push_str(", timeoutSeconds: 2");
        }
        if self.rng.chance(10) && !self.run_ids.is_empty() {
            let r = self.run_ids[self.rng.below(self.run_ids.len() as u64) as usize].clone();
            s.push_str(&format!(", when: \"steps.\\\"{r}\\\".outputs.flag\""));
        }
        s
    }

    fn steps(&mut self, depth: u32, n: u64) -> Vec<String> {
        (0..n).map(|_| self.step(depth)).collect()
    }

    fn step(&mut self, depth: u32) -> String {
        let kind = if depth >= 2 { 0 } else { self.rng.below(10) };
        let common = self.common();
        match kind {
            0..=3 => {
                let id = self.id("r");
                let flag = self.rng.chance(50);
                self.run_ids.push(id.clone());
                format!(
                    "{{id: {id}{common}, run: {{uses: \"builtin:noop\", with: {{flag: {flag}, list: [1, 2, 3]}}}}}}"
                )
            }
            4 => {
                let id = self.id("g");
                format!(
                    "{{id: {id}{common}, gate: {{approval: {{id: a{}}}}}}}",
                    self.rng.below(2)
                )
            }
            5 => {
                let id = self.id("p");
                let action =
                    ["abort", "warn", "requestOverride", "branch"][self.rng.below(4) as usize];
                let rule =
                    ["`true`", "`false`", "length(inputs.xs) > `1`"][self.rng.below(3) as usize];
                let _ = rule;
                let mut s = format!(
                    "{{id: {id}{common}, gate: {{policy: {{policy: pol{}, failureAction: {action}, retryCount: {}",
                    self.rng.below(2),
                    self.rng.below(2)
                );
                if action == "requestOverride" {
                    s.push_str(", overrideApproval: a0");
                }
                if action == "branch" {
                    let k = 1 + self.rng.below(2);
                    let kids = self.steps(depth + 1, k);
                    s.push_str(&format!(", onFailure: [{}]", kids.join(", ")));
                }
                s.push_str("}}}");
                s
            }
            6 => {
                let id = self.id("par");
                let max = if self.rng.chance(50) {
                    format!("maxParallel: {}, ", 1 + self.rng.below(2))
                } else {
                    String::new()
                };
                let k = 1 + self.rng.below(3);
                let kids = self.steps(depth + 1, k);
                format!(
                    "{{id: {id}{common}, parallel: {{{max}steps: [{}]}}}}",
                    kids.join(", ")
                )
            }
            7 => {
                let id = self.id("m");
                let items = if self.run_ids.is_empty() || self.rng.chance(30) {
                    "inputs.xs".to_owned()
                } else {
                    let r =
                        self.run_ids[self.rng.below(self.run_ids.len() as u64) as usize].clone();
                    format!("steps.\\\"{r}\\\".outputs.list")
                };
                let body = self.step(depth + 1);
                format!(
                    "{{id: {id}{common}, map: {{items: \"{items}\", maxParallel: {}, step: {body}}}}}",
                    1 + self.rng.below(2)
                )
            }
            8 => {
                let id = self.id("l");
                let agg = ["collect", "merge", "first", "last", "none"][self.rng.below(5) as usize];
                let until = if self.rng.chance(40) {
                    ", until: \"index == `1`\""
                } else {
                    ""
                };
                let max = if self.rng.chance(20) {
                    ", maxIterations: 2"
                } else {
                    ""
                };
                let items = if self.rng.chance(50) || self.run_ids.is_empty() {
                    "{static: [a, b, c]}".to_owned()
                } else {
                    let r =
                        self.run_ids[self.rng.below(self.run_ids.len() as u64) as usize].clone();
                    format!("{{expression: \"steps.\\\"{r}\\\".outputs.list\"}}")
                };
                let k = 1 + self.rng.below(2);
                let kids = self.steps(depth + 1, k);
                format!(
                    "{{id: {id}{common}, loop: {{items: {items}, aggregation: {agg}{until}{max}, steps: [{}]}}}}",
                    kids.join(", ")
                )
            }
            _ => {
                let id = self.id("c");
                let cond = if self.run_ids.is_empty() {
                    "length(inputs.xs) > `1`".to_owned()
                } else {
                    let r =
                        self.run_ids[self.rng.below(self.run_ids.len() as u64) as usize].clone();
                    format!("steps.\\\"{r}\\\".outputs.flag")
                };
                let a = self.steps(depth + 1, 1);
                let b = self.steps(depth + 1, 1);
                format!(
                    "{{id: {id}{common}, conditional: {{branches: [{{when: \"{cond}\", steps: [{}]}}], else: [{}]}}}}",
                    a.join(", "),
                    b.join(", ")
                )
            }
        }
    }
}

fn pack(rng: Rng) -> String {
    let mut g = Gen {
        rng,
        count: 0,
        run_ids: Vec::new(),
    };
    let n = 1 + g.rng.below(4);
    let steps = g.steps(0, n);
    let rule = ["`true`", "`false`", "length(inputs.xs) > `5`"];
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: prop, version: 1.0.0}}\nspec:\n  inputs:\n    - {{name: xs, type: array, default: [1, 2]}}\n  approvals:\n    - {{id: a0, requiredApprovals: {}, expiresAfter: 1m}}\n    - {{id: a1}}\n  policies:\n    - {{id: pol0, rule: \"{}\"}}\n    - {{id: pol1, rule: \"{}\"}}\n  steps:\n{}",
        1 + g.rng.below(2),
        rule[g.rng.below(3) as usize],
        rule[g.rng.below(3) as usize],
        steps
            .iter()
            .map(|s| format!("    - {s}\n"))
            .collect::<String>()
    )
}

/// Events processed before the run must be terminal.
const EVENTS_MAX: usize = 2_000;

fn simulate(seed: u64) -> Result<Option<(String, bool)>, String> {
    let mut rng = Rng(seed | 1);
    let yaml = pack(Rng(rng.next() | 1));
    let plan = match taskrunner_plan::plan_yaml(&yaml, &Map::new()) {
        Ok(p) => Arc::new(p),
        // Some random packs are invalid (e.g. a `when` referencing a later step): fine.
        Err(_) => return Ok(None),
    };
    let info = RunInfo {
        run_id: "r".into(),
        tenant: "t".into(),
    };
    let secrets = Secrets::new().with("tok", "secret-value");
    let mut run = Run::new(plan.clone(), info.clone(), T0);
    let mut journal = Journal::new(plan.hash());
    let mut records: Vec<JournalRecord> = Vec::new();
    let mut now = T0;
    let mut in_flight: Vec<(String, u32, bool)> = Vec::new();
    let mut wake: Option<Timestamp> = None;
    let approvals = ["a0", "a1"];
    let actors = ["ann", "bob", "cy"];

    let mut step = |run: &mut Run,
                    records: &mut Vec<JournalRecord>,
                    in_flight: &mut Vec<(String, u32, bool)>,
                    wake: &mut Option<Timestamp>,
                    now: Timestamp,
                    e: Event|
     -> Result<(), String> {
        let was_terminal = run.is_terminal();
        records.push(journal.append(now, e.masked(&secrets)));
        let cmds = run.apply(now, &e, &secrets);
        invariants(run, &cmds, was_terminal)?;
        for c in cmds {
            match c {
                Command::StartAttempt {
                    step_id, attempt, ..
                } => in_flight.push((step_id, attempt, false)),
                Command::CancelAttempt { step_id, attempt } => {
                    for f in in_flight.iter_mut() {
                        if f.0 == step_id && f.1 == attempt {
                            f.2 = true;
                        }
                    }
                }
                Command::WakeAt(t) => *wake = Some(t),
                _ => {}
            }
        }
        Ok(())
    };

    step(
        &mut run,
        &mut records,
        &mut in_flight,
        &mut wake,
        now,
        Event::Started,
    )?;
    let mut n = 0;
    let mut awaited = false;
    while !(run.is_terminal() && in_flight.is_empty()) {
        n += 1;
        if n > EVENTS_MAX {
            return Err(format!("not terminal after {EVENTS_MAX} events:\n{yaml}"));
        }
        now = Timestamp(now.0 + rng.below(3000) as i64);
        let roll = rng.below(100);
        let event = if n > 400 && !run.is_terminal() {
            Event::CancelRequested { actor: None }
        } else if roll < 45 && !in_flight.is_empty() {
            let k = rng.below(in_flight.len() as u64) as usize;
            let (step_id, attempt, cancelled) = in_flight.remove(k);
            let outcome = if cancelled {
                AttemptOutcome::Failed {
                    reason: "cancelled".into(),
                    message: String::new(),
                }
            } else if rng.chance(70) {
                let mut m = Map::new();
                m.insert("flag".into(), Value::Bool(rng.chance(50)));
                m.insert("list".into(), json!([1, 2, 3]));
                m.insert("leak".into(), json!("secret-value"));
                AttemptOutcome::Succeeded { outputs: m }
            } else {
                let reason = ["exit-code", "timeout", "executor-error"][rng.below(3) as usize];
                AttemptOutcome::Failed {
                    reason: reason.into(),
                    message: "boom secret-value".into(),
                }
            };
            Event::AttemptFinished {
                step_id,
                attempt,
                outcome,
            }
        } else if roll < 65 {
            if let Some(t) = wake.take() {
                now = now.max(t);
            }
            Event::Tick
        } else if roll < 88 {
            let decision = match rng.below(10) {
                0 => Decision::Rejected,
                1 => Decision::Expired,
                _ => Decision::Approved,
            };
            let plan_hash = if rng.chance(5) {
                "sha256:bad".to_owned()
            } else {
                plan.hash().to_owned()
            };
            Event::ApprovalDecided {
                approval_id: approvals[rng.below(2) as usize].into(),
                decision,
                actor: actors[rng.below(3) as usize].into(),
                summary: None,
                plan_hash,
            }
        } else if roll < 91 {
            Event::CancelRequested {
                actor: Some("ops".into()),
            }
        } else if roll < 95 {
            // A crash: attempts in flight are lost; the run is rebuilt from the journal.
            in_flight.clear();
            wake = None;
            let replayed =
                taskrunner_engine::replay(plan.clone(), info.clone(), T0, &records, &secrets)
                    .map_err(|e| e.to_string())?;
            if replayed.state() != run.state() {
                return Err(format!("replay before recovery differs:\n{yaml}"));
            }
            run = replayed;
            Event::Recovered
        } else if rng.chance(50) {
            Event::AttemptFinished {
                step_id: "nope".into(),
                attempt: 7,
                outcome: AttemptOutcome::Failed {
                    reason: String::new(),
                    message: String::new(),
                },
            }
        } else {
            Event::Tick
        };
        step(
            &mut run,
            &mut records,
            &mut in_flight,
            &mut wake,
            now,
            event,
        )?;
        awaited |= run.status() == taskrunner_engine::RunStatus::AwaitingApproval;
    }
    if !replay_matches(&run, &info, &records, &secrets) {
        return Err(format!("replay differs from live state:\n{yaml}"));
    }
    let state = serde_json::to_string(run.state()).unwrap();
    let journal_text = serde_json::to_string(&records).unwrap();
    if state.contains("secret-value") || journal_text.contains("secret-value") {
        return Err(format!("secret stored:\n{yaml}"));
    }
    // The view is total.
    let view = run.view();
    let mut seen = BTreeMap::new();
    for s in &view.steps {
        if seen.insert(s.step_id.clone(), ()).is_some() {
            return Err(format!("duplicate step id {} in view", s.step_id));
        }
    }
    Ok(Some((run.status().as_str().to_owned(), awaited)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_hold_invariants(seed in any::<u64>()) {
        if let Err(e) = simulate(seed) {
            prop_assert!(false, "seed {seed}: {e}");
        }
    }
}

#[test]
fn random_runs_are_diverse() {
    let mut statuses = BTreeMap::new();
    let mut awaited = 0;
    for seed in 1..400u64 {
        if let Some((status, a)) = simulate(seed * 104_729).unwrap() {
            *statuses.entry(status).or_insert(0) += 1;
            awaited += usize::from(a);
        }
    }
    for s in ["Succeeded", "Failed", "Cancelled"] {
        assert!(statuses.get(s).copied().unwrap_or(0) > 10, "{statuses:?}");
    }
    assert!(awaited > 10, "{awaited}");
}

#[test]
fn generated_packs_mostly_plan() {
    let mut ok = 0;
    for seed in 1..200u64 {
        let yaml = pack(Rng(seed * 7919));
        if taskrunner_plan::plan_yaml(&yaml, &Map::new()).is_ok() {
            ok += 1;
        } else if seed < 3 {
            eprintln!(
                "{yaml}\n{:?}",
                taskrunner_plan::plan_yaml(&yaml, &Map::new()).err()
            );
        }
    }
    assert!(ok > 100, "only {ok} of 199 generated packs plan");
}
