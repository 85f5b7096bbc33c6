//! Journal tampering (every kind) and approval decision checks (SPEC §5.4, rules 15–16, 22).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::Map;
use taskrunner_engine::{
    AttemptOutcome, Decision, Error, Event, Journal, JournalRecord, Run, RunInfo, RunStatus,
    Secrets, Timestamp, replay, verify,
};

const PACK: &str = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: j, version: 1.0.0}
spec:
  approvals:
    - {id: ok, requiredApprovals: 2}
    - {id: unused-elsewhere}
  steps:
    - {id: build, run: {uses: "builtin:noop"}}
    - {id: gate, gate: {approval: {id: ok}}}
    - {id: ship, run: {uses: "builtin:noop"}}
"#;

fn setup() -> (Arc<taskrunner_plan::Plan>, RunInfo) {
    let plan = Arc::new(taskrunner_plan::plan_yaml(PACK, &Map::new()).unwrap());
    let info = RunInfo {
        run_id: "r1".into(),
        tenant: "acme".into(),
    };
    (plan, info)
}

fn decided(plan_hash: &str, actor: &str, decision: Decision) -> Event {
    Event::ApprovalDecided {
        approval_id: "ok".into(),
        decision,
        actor: actor.into(),
        summary: None,
        plan_hash: plan_hash.into(),
    }
}

fn records() -> (Arc<taskrunner_plan::Plan>, RunInfo, Vec<JournalRecord>) {
    let (plan, info) = setup();
    let mut j = Journal::new(plan.hash());
    let events = [
        Event::Started,
        Event::AttemptFinished {
            step_id: "build".into(),
            attempt: 1,
            outcome: AttemptOutcome::Succeeded {
                outputs: Map::new(),
            },
        },
        decided(plan.hash(), "alice", Decision::Approved),
        decided(plan.hash(), "bob", Decision::Approved),
    ];
    let recs = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| j.append(Timestamp(1000 * i as i64), e))
        .collect();
    (plan, info, recs)
}

#[test]
fn intact_journal_verifies_and_replays() {
    let (plan, info, recs) = records();
    let head = recs.last().unwrap().hash.clone();
    assert!(head.starts_with("sha256:") && head.len() == 71);
    verify(plan.hash(), &recs, Some(&head)).unwrap();
    let run = replay(plan.clone(), info, Timestamp(0), &recs, &Secrets::new()).unwrap();
    assert_eq!(run.status(), RunStatus::Running);
    assert_eq!(run.running_attempts(), vec![("ship".to_owned(), 1)]);
    let resumed = Journal::resume(plan.hash(), &recs).unwrap();
    assert_eq!(resumed.head(), head);
    assert_eq!(resumed.next_seq(), 5);
}

#[test]
fn altered_record_is_detected() {
    let (plan, _, mut recs) = records();
    recs[2].event = decided(plan.hash(), "mallory", Decision::Approved);
    assert_eq!(
        verify(plan.hash(), &recs, None),
        Err(Error::JournalHashMismatch { seq: 3 })
    );
    let (plan, _, mut recs) = records();
    recs[1].at = Timestamp(5);
    assert_eq!(
        verify(plan.hash(), &recs, None),
        Err(Error::JournalHashMismatch { seq: 2 })
    );
}

#[test]
fn dropped_record_is_detected() {
    let (plan, _, mut recs) = records();
    recs.remove(1);
    assert_eq!(
        verify(plan.hash(), &recs, None),
        Err(Error::JournalSequence {
            expected: 2,
            found: 3
        })
    );
}

#[test]
fn dropped_and_renumbered_record_breaks_the_link() {
    let (plan, _, mut recs) = records();
    recs.remove(1);
    for (i, r) in recs.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    assert_eq!(
        verify(plan.hash(), &recs, None),
        Err(Error::JournalBrokenLink { seq: 2 })
    );
}

#[test]
fn reordered_records_are_detected() {
    let (plan, _, mut recs) = records();
    recs.swap(2, 3);
    assert_eq!(
        verify(plan.hash(), &recs, None),
        Err(Error::JournalSequence {
            expected: 3,
            found: 4
        })
    );
}

#[test]
fn truncated_tail_is_detected_against_the_head() {
    let (plan, _, mut recs) = records();
    let head = recs.last().unwrap().hash.clone();
    recs.pop();
    verify(plan.hash(), &recs, None).unwrap();
    assert!(matches!(
        verify(plan.hash(), &recs, Some(&head)),
        Err(Error::JournalHeadMismatch { .. })
    ));
}

#[test]
fn rewritten_chain_is_detected_against_the_head() {
    let (plan, _, recs) = records();
    let head = recs.last().unwrap().hash.clone();
    let mut j = Journal::new(plan.hash());
    let forged: Vec<_> = recs
        .iter()
        .map(|r| j.append(r.at, Event::Tick).clone())
        .collect();
    verify(plan.hash(), &forged, None).unwrap();
    assert!(verify(plan.hash(), &forged, Some(&head)).is_err());
}

#[test]
fn wrong_root_is_detected() {
    let (_, _, recs) = records();
    assert_eq!(
        verify("sha256:other", &recs, None),
        Err(Error::JournalBrokenLink { seq: 1 })
    );
}

#[test]
fn decision_checks_follow_rule_16() {
    let (plan, info) = setup();
    let s = Secrets::new();
    let h = plan.hash().to_owned();
    let mut run = Run::new(plan.clone(), info, Timestamp(0));
    assert_eq!(
        run.check_decision("nope", Decision::Approved, "a", &h),
        Err(Error::UnknownApproval("nope".into()))
    );
    // An approval declared but used by no gate is unknown to this run.
    assert!(matches!(
        run.check_decision("unused-elsewhere", Decision::Approved, "a", &h),
        Err(Error::UnknownApproval(_))
    ));
    assert!(matches!(
        run.check_decision("ok", Decision::Approved, "a", "sha256:x"),
        Err(Error::PlanHashMismatch { .. })
    ));
    // Before the gate is reached: held, not resumed.
    let c = run
        .check_decision("ok", Decision::Approved, "alice", &h)
        .unwrap();
    assert!(!c.already_applied && !c.resume);
    run.apply(Timestamp(1), &decided(&h, "alice", Decision::Approved), &s);
    let c = run
        .check_decision("ok", Decision::Approved, "alice", &h)
        .unwrap();
    assert!(c.already_applied && !c.resume);
    run.apply(Timestamp(2), &Event::Started, &s);
    run.apply(
        Timestamp(3),
        &Event::AttemptFinished {
            step_id: "build".into(),
            attempt: 1,
            outcome: AttemptOutcome::Succeeded {
                outputs: Map::new(),
            },
        },
        &s,
    );
    // The held approval counted: bob completes the gate.
    assert_eq!(run.status(), RunStatus::AwaitingApproval);
    let c = run
        .check_decision("ok", Decision::Approved, "alice", &h)
        .unwrap();
    assert!(c.already_applied && !c.resume);
    let c = run
        .check_decision("ok", Decision::Approved, "bob", &h)
        .unwrap();
    assert!(!c.already_applied && c.resume);
    run.apply(Timestamp(4), &decided(&h, "bob", Decision::Approved), &s);
    assert_eq!(run.status(), RunStatus::Running);
    // Repeat of bob's completing decision: idempotent with the same answer.
    let c = run
        .check_decision("ok", Decision::Approved, "bob", &h)
        .unwrap();
    assert!(c.already_applied && c.resume);
    // Someone else, or a different decision: already decided.
    assert!(matches!(
        run.check_decision("ok", Decision::Approved, "carol", &h),
        Err(Error::ApprovalAlreadyDecided(_))
    ));
    assert!(matches!(
        run.check_decision("ok", Decision::Rejected, "bob", &h),
        Err(Error::ApprovalAlreadyDecided(_))
    ));
    run.apply(Timestamp(5), &Event::CancelRequested { actor: None }, &s);
    assert!(matches!(
        run.check_decision("ok", Decision::Rejected, "dave", &h),
        Err(Error::RunTerminal(_))
    ));
    assert_eq!(Error::RunTerminal("x".into()).code(), "run_terminal");
}

#[test]
fn events_after_terminal_are_ignored_and_unknown_events_never_panic() {
    let (plan, info) = setup();
    let s = Secrets::new();
    let mut run = Run::new(plan.clone(), info, Timestamp(0));
    assert!(
        run.apply(
            Timestamp(0),
            &Event::AttemptFinished {
                step_id: "ghost".into(),
                attempt: 9,
                outcome: AttemptOutcome::Failed {
                    reason: String::new(),
                    message: String::new()
                }
            },
            &s
        )
        .is_empty()
    );
    run.apply(Timestamp(1), &Event::CancelRequested { actor: None }, &s);
    assert_eq!(run.status(), RunStatus::Cancelled);
    let before = run.state().clone();
    for e in [
        Event::Started,
        Event::Tick,
        Event::Recovered,
        Event::CancelRequested { actor: None },
        decided(plan.hash(), "x", Decision::Approved),
    ] {
        assert!(run.apply(Timestamp(9), &e, &s).is_empty(), "{e:?}");
    }
    assert_eq!(run.state(), &before);
    assert!(run.view().steps.iter().all(|s| s.status.is_finished()));
}

#[test]
fn event_json_shape() {
    let e = Event::AttemptFinished {
        step_id: "a".into(),
        attempt: 1,
        outcome: AttemptOutcome::Failed {
            reason: "timeout".into(),
            message: "m".into(),
        },
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"type":"attemptFinished","stepId":"a","attempt":1,"outcome":{"status":"failed","reason":"timeout","message":"m"}}"#
    );
    let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}
