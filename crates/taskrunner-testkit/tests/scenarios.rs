//! Engine scenarios driven by the simulation harness; each trace is an insta snapshot under
//! `fixtures/engine/snapshots/`.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use taskrunner_engine::{Decision, Event};
use taskrunner_testkit::{Scripted, Sim};

fn pack(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n{spec}"
    )
}

fn sim(name: &str, spec: &str) -> Sim {
    sim_with(name, spec, json!({}))
}

fn sim_with(name: &str, spec: &str, inputs: Value) -> Sim {
    Sim::new(&pack(name, spec), inputs).unwrap()
}

fn snap(name: &str, sim: &mut Sim) -> String {
    let trace = sim.finish().unwrap();
    insta::with_settings!({
        snapshot_path => "../../../fixtures/engine/snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, trace);
    });
    trace
}

#[test]
fn sequential_success() {
    let mut s = sim(
        "seq",
        r#"  steps:
    - {id: build, run: {uses: "builtin:noop", with: {artifact: app.tar}}}
    - {id: test, run: {uses: "builtin:echo", with: {message: "testing {{ steps.build.outputs.artifact }}"}}}
    - {id: ship, run: {uses: "builtin:noop"}}
"#,
    );
    let t = snap("sequential_success", &mut s);
    assert!(t.contains("== run Succeeded"));
}

#[test]
fn retries_succeed_on_third_attempt() {
    let mut s = sim(
        "retry",
        r#"  steps:
    - id: flaky
      retries: {maxAttempts: 3, backoffSeconds: 5}
      run: {uses: "builtin:shell", with: {script: "exit 1"}}
"#,
    );
    s.script(
        "flaky",
        vec![
            Scripted::fail(1000, "exit-code"),
            Scripted::fail(1000, "exit-code"),
            Scripted::ok(1000),
        ],
    );
    let t = snap("retries_succeed_on_third_attempt", &mut s);
    // first failure at t=1, retry at t=6; second failure at t=7, retry at t=12.
    assert!(t.contains("nextAttemptAt=2025-12-06T10:00:06Z"));
    assert!(t.contains("nextAttemptAt=2025-12-06T10:00:12Z"));
    assert_eq!(s.run().view().steps[0].attempts, 3);
}

#[test]
fn retries_exhausted() {
    let mut s = sim(
        "exhausted",
        r#"  failure:
    retries: {maxAttempts: 2, backoffSeconds: 1}
  steps:
    - {id: flaky, run: {uses: "builtin:shell", with: {script: "exit 1"}}}
    - {id: after, run: {uses: "builtin:noop"}}
"#,
    );
    s.script("flaky", vec![Scripted::fail(500, "exit-code")]);
    let t = snap("retries_exhausted", &mut s);
    assert!(t.contains("== run Failed"));
    assert!(t.contains("run-failed"));
}

#[test]
fn continue_on_error_step() {
    let mut s = sim(
        "coe-step",
        r#"  steps:
    - {id: lint, continueOnError: true, run: {uses: "builtin:shell", with: {script: "exit 1"}}}
    - {id: build, run: {uses: "builtin:noop", with: {lint: "{{ steps.lint.status }}"}}}
"#,
    );
    s.script("lint", vec![Scripted::fail(300, "exit-code")]);
    let t = snap("continue_on_error_step", &mut s);
    assert!(t.contains("== run Succeeded"));
}

#[test]
fn continue_on_error_pack() {
    let mut s = sim(
        "coe-pack",
        r#"  failure: {continueOnError: true}
  steps:
    - {id: a, run: {uses: "builtin:shell"}}
    - {id: b, run: {uses: "builtin:shell"}}
"#,
    );
    s.script("a", vec![Scripted::fail(300, "exit-code")]);
    let t = snap("continue_on_error_pack", &mut s);
    assert!(t.contains("== run Succeeded"));
}

#[test]
fn parallel_max_two() {
    let mut s = sim(
        "par",
        r#"  steps:
    - id: fan
      parallel:
        maxParallel: 2
        steps:
          - {id: a, run: {uses: "builtin:sleep"}}
          - {id: b, run: {uses: "builtin:sleep"}}
          - {id: c, run: {uses: "builtin:sleep"}}
          - {id: d, run: {uses: "builtin:sleep"}}
          - {id: e, run: {uses: "builtin:sleep"}}
    - {id: join, run: {uses: "builtin:noop", with: {a: "{{ steps.a.status }}"}}}
"#,
    );
    s.script("a", vec![Scripted::ok(3000)]);
    s.script("c", vec![Scripted::ok(500)]);
    snap("parallel_max_two", &mut s);
    assert_eq!(s.max_running().get("fan"), Some(&2));
}

#[test]
fn parallel_failure_cancels_siblings() {
    let mut s = sim(
        "par-fail",
        r#"  steps:
    - id: fan
      parallel:
        maxParallel: 2
        steps:
          - {id: slow, run: {uses: "builtin:sleep"}}
          - {id: boom, run: {uses: "builtin:shell"}}
          - {id: never, run: {uses: "builtin:noop"}}
    - {id: after, run: {uses: "builtin:noop"}}
"#,
    );
    s.script("slow", vec![Scripted::ok(10_000)]);
    s.script("boom", vec![Scripted::fail(1000, "exit-code")]);
    let t = snap("parallel_failure_cancels_siblings", &mut s);
    assert!(t.contains("→ cancel slow#1"));
    assert!(t.contains("parent-failed"));
}

#[test]
fn map_plan_time() {
    let mut s = sim_with(
        "map-plan",
        r#"  inputs:
    - {name: regions, type: array, default: [eu, us]}
  steps:
    - id: deploy
      map:
        items: inputs.regions
        step: {id: push, run: {uses: "builtin:noop", with: {region: "{{ item }}", n: "{{ index }}"}}}
"#,
        json!({"regions": ["eu", "us", "ap"]}),
    );
    snap("map_plan_time", &mut s);
}

#[test]
fn map_run_time() {
    let mut s = sim(
        "map-run",
        r#"  steps:
    - id: discover
      run: {uses: "builtin:noop", with: {targets: [x, skip, y]}}
    - id: scan-all
      map:
        items: steps.discover.outputs.targets
        step:
          id: scan-one
          when: item != 'skip'
          run: {uses: "builtin:echo", with: {message: "scan {{ item }} ({{ index }})"}}
    - {id: report, run: {uses: "builtin:noop", with: {all: "{{ steps.\"scan-all\".outputs }}"}}}
"#,
    );
    let t = snap("map_run_time", &mut s);
    assert!(t.contains("scan-all[1]::scan-one"));
    assert!(t.contains("when-false"));
}

#[test]
fn map_max_parallel() {
    let mut s = sim(
        "map-par",
        r#"  steps:
    - {id: list, run: {uses: "builtin:noop", with: {items: [1, 2, 3, 4, 5]}}}
    - id: each
      map:
        items: steps.list.outputs.items
        maxParallel: 2
        step: {id: work, run: {uses: "builtin:sleep", with: {n: "{{ item }}"}}}
"#,
    );
    snap("map_max_parallel", &mut s);
    assert_eq!(s.max_running().get("each"), Some(&2));
}

#[test]
fn loop_until_exits_early() {
    let mut s = sim(
        "loop-until",
        r#"  steps:
    - id: poll
      loop:
        items: {range: {start: 0, end: 5}}
        iterator: n
        until: steps.check.outputs.done
        steps:
          - {id: check, run: {uses: "builtin:noop", with: {done: "{{ n == `2` }}", n: "{{ n }}"}}}
"#,
    );
    let t = snap("loop_until_exits_early", &mut s);
    assert!(t.contains("until-satisfied"));
}

#[test]
fn loop_max_iterations_at_run_time() {
    let mut s = sim(
        "loop-max",
        r#"  steps:
    - {id: list, run: {uses: "builtin:noop", with: {items: [a, b, c, d]}}}
    - id: each
      loop:
        items: {expression: steps.list.outputs.items}
        maxIterations: 3
        steps:
          - {id: work, run: {uses: "builtin:noop"}}
"#,
    );
    let t = snap("loop_max_iterations_at_run_time", &mut s);
    assert!(t.contains("max-iterations"));
    assert!(t.contains("== run Failed"));
}

#[test]
fn loop_aggregations() {
    let body = |id: &str, mode: &str| {
        format!(
            r#"    - id: {id}
      loop:
        items: {{static: [1, 2, 3]}}
        aggregation: {mode}
        steps:
          - {{id: {id}-body, run: {{uses: "builtin:noop", with: {{k{mode}: "{{{{ item }}}}", last: "{{{{ item }}}}"}}}}}}
"#
        )
    };
    let spec = format!(
        "  steps:\n{}{}{}{}{}  outputs:\n    - {{name: all, type: object, expression: \"{{collect: steps.c.outputs, merge: steps.m.outputs, first: steps.f.outputs, last: steps.l.outputs, none: steps.n.outputs}}\"}}\n",
        body("c", "collect"),
        body("m", "merge"),
        body("f", "first"),
        body("l", "last"),
        body("n", "none"),
    );
    let mut s = sim("aggregations", &spec);
    snap("loop_aggregations", &mut s);
    let out = serde_json::to_value(s.run().outputs().unwrap()).unwrap();
    let all = &out[0]["value"];
    assert_eq!(all["collect"].as_array().unwrap().len(), 3);
    assert_eq!(all["merge"]["last"], json!(3));
    assert_eq!(all["first"]["last"], json!(1));
    assert_eq!(all["last"]["last"], json!(3));
    assert_eq!(all["none"], Value::Null);
}

#[test]
fn conditional_plan_time() {
    let mut s = sim_with(
        "cond-plan",
        r#"  inputs:
    - {name: env, type: string, default: dev}
  steps:
    - id: pick
      conditional:
        branches:
          - when: "inputs.env == 'prod'"
            steps: [{id: prod-deploy, run: {uses: "builtin:noop"}}]
        else: [{id: dev-deploy, run: {uses: "builtin:noop"}}]
"#,
        json!({"env": "prod"}),
    );
    let t = snap("conditional_plan_time", &mut s);
    assert!(t.contains("branch-not-taken"));
}

#[test]
fn conditional_run_time() {
    let mut s = sim(
        "cond-run",
        r#"  steps:
    - {id: test, run: {uses: "builtin:noop", with: {passed: false}}}
    - id: decide
      conditional:
        branches:
          - when: steps.test.outputs.passed
            steps: [{id: release, run: {uses: "builtin:noop", with: {v: 1}}}]
        else: [{id: rollback, run: {uses: "builtin:noop", with: {reason: failed}}}]
    - {id: after, run: {uses: "builtin:noop", with: {d: "{{ steps.decide.outputs }}"}}}
"#,
    );
    let t = snap("conditional_run_time", &mut s);
    assert!(t.contains("release") && t.contains("branch-not-taken"));
}

#[test]
fn when_false_at_run_time() {
    let mut s = sim(
        "when-run",
        r#"  steps:
    - {id: probe, run: {uses: "builtin:noop", with: {deploy: false}}}
    - id: deploy
      when: steps.probe.outputs.deploy
      parallel:
        steps: [{id: push, run: {uses: "builtin:noop"}}]
    - {id: done, run: {uses: "builtin:noop"}}
"#,
    );
    let t = snap("when_false_at_run_time", &mut s);
    assert!(t.contains("step.skipped [deploy]"));
    assert!(t.contains("step.skipped [push]"));
}

const GATE: &str = r#"  approvals:
    - {id: release, requiredApprovals: REQ, expiresAfter: 1h, reasonTemplate: "Release {{ run.id }}?"}
  steps:
    - {id: build, run: {uses: "builtin:noop"}}
    - {id: approve, gate: {approval: {id: release}}}
    - {id: ship, run: {uses: "builtin:noop"}}
"#;

fn gate(req: u32) -> Sim {
    sim("gate", &GATE.replace("REQ", &req.to_string()))
}

#[test]
fn approval_approved() {
    let mut s = gate(1);
    s.decide(5_000, "release", Decision::Approved, "alice");
    let t = snap("approval_approved", &mut s);
    assert!(t.contains("gate.awaiting") && t.contains("gate.approved"));
    assert_eq!(s.run().view().steps[1].attempts, 0);
}

#[test]
fn approval_rejected() {
    let mut s = gate(1);
    s.decide(5_000, "release", Decision::Rejected, "alice");
    let t = snap("approval_rejected", &mut s);
    assert!(t.contains("approval-rejected") && t.contains("== run Failed"));
}

#[test]
fn approval_expired() {
    let mut s = gate(1);
    let t = snap("approval_expired", &mut s);
    assert!(t.contains("gate.expired") && t.contains("approval-expired"));
    assert!(t.contains("t=3601.000 Tick"));
}

#[test]
fn approval_explicit_expiry_decision() {
    let mut s = gate(1);
    s.decide(2_000, "release", Decision::Expired, "ops");
    let t = snap("approval_explicit_expiry_decision", &mut s);
    assert!(t.contains("approval-expired"));
}

#[test]
fn approval_early_decision() {
    let mut s = gate(1);
    s.decide(100, "release", Decision::Approved, "alice");
    let t = snap("approval_early_decision", &mut s);
    assert!(t.contains("== run Succeeded"));
}

#[test]
fn approval_two_required() {
    let mut s = gate(2);
    s.decide(5_000, "release", Decision::Approved, "alice");
    s.decide(9_000, "release", Decision::Approved, "bob");
    let t = snap("approval_two_required", &mut s);
    assert_eq!(t.matches("gate.approved").count(), 1);
    assert!(t.contains("== run Succeeded"));
}

#[test]
fn approval_same_actor_twice() {
    let mut s = gate(2);
    s.decide(5_000, "release", Decision::Approved, "alice");
    s.decide(6_000, "release", Decision::Approved, "alice");
    let t = snap("approval_same_actor_twice", &mut s);
    // alice counts once: the gate expires after an hour.
    assert!(t.contains("approval-expired"));
}

#[test]
fn approval_reused_by_two_gates() {
    let mut s = sim(
        "reuse",
        r#"  approvals:
    - {id: ok}
  steps:
    - {id: first, gate: {approval: {id: ok, message: "first gate"}}}
    - {id: middle, run: {uses: "builtin:noop"}}
    - {id: second, gate: {approval: {id: ok, message: "second gate"}}}
"#,
    );
    s.decide(1_000, "ok", Decision::Approved, "alice");
    s.decide(5_000, "ok", Decision::Approved, "alice");
    let t = snap("approval_reused_by_two_gates", &mut s);
    assert!(t.contains("== run Succeeded"));
}

fn policy(action: &str, extra: &str, signed: bool) -> Sim {
    sim(
        "policy",
        &format!(
            r#"  approvals:
    - {{id: exception}}
  policies:
    - {{id: signed, rule: "steps.verify.outputs.signed", message: "image {{{{ steps.verify.outputs.image }}}} is not signed"}}
  steps:
    - {{id: verify, run: {{uses: "builtin:noop", with: {{signed: {signed}, image: app}}}}}}
    - id: gate
      retries: {{backoffSeconds: 3}}
      gate:
        policy:
          policy: signed
          failureAction: {action}
{extra}
    - {{id: after, run: {{uses: "builtin:noop"}}}}
"#
        ),
    )
}

#[test]
fn policy_pass() {
    let mut s = policy("abort", "", true);
    let t = snap("policy_pass", &mut s);
    assert!(t.contains("policy.passed"));
}

#[test]
fn policy_abort() {
    let mut s = policy("abort", "", false);
    let t = snap("policy_abort", &mut s);
    assert!(t.contains("policy-failed") && t.contains("== run Failed"));
}

#[test]
fn policy_warn() {
    let mut s = policy("warn", "", false);
    let t = snap("policy_warn", &mut s);
    assert!(t.contains("→ log warn policy.failed") && t.contains("== run Succeeded"));
}

#[test]
fn policy_request_override() {
    let mut s = policy(
        "requestOverride",
        "          overrideApproval: exception",
        false,
    );
    s.decide(10_000, "exception", Decision::Approved, "sec-team");
    let t = snap("policy_request_override", &mut s);
    assert!(t.contains("gate.awaiting") && t.contains("== run Succeeded"));
}

#[test]
fn policy_branch() {
    let mut s = policy(
        "branch",
        "          onFailure:\n            - {id: quarantine, run: {uses: \"builtin:noop\"}}\n            - {id: alert, run: {uses: \"builtin:noop\"}}",
        false,
    );
    let t = snap("policy_branch", &mut s);
    assert!(t.contains("start quarantine#1") && t.contains("== run Succeeded"));
}

#[test]
fn policy_branch_skipped_when_passing() {
    let mut s = policy(
        "branch",
        "          onFailure:\n            - {id: quarantine, run: {uses: \"builtin:noop\"}}",
        true,
    );
    let t = snap("policy_branch_skipped_when_passing", &mut s);
    assert!(t.contains("step.skipped [quarantine]"));
}

#[test]
fn policy_retry_count() {
    let mut s = policy("abort", "          retryCount: 2", false);
    let t = snap("policy_retry_count", &mut s);
    assert_eq!(t.matches("policy.failed").count(), 3);
    assert_eq!(s.run().view().steps[1].attempts, 3);
}

#[test]
fn cancellation_mid_run() {
    let mut s = sim(
        "cancel",
        r#"  approvals:
    - {id: ok}
  outputs:
    - {name: seen, type: object, expression: "steps.a.status"}
  steps:
    - id: fan
      parallel:
        steps:
          - {id: a, run: {uses: "builtin:sleep"}}
          - {id: b, run: {uses: "builtin:sleep"}}
          - {id: g, gate: {approval: {id: ok}}}
    - {id: after, run: {uses: "builtin:noop"}}
"#,
    );
    s.script("a", vec![Scripted::ok(500)]);
    s.script("b", vec![Scripted::ok(10_000)]);
    s.at(
        2_000,
        Event::CancelRequested {
            actor: Some("bob".to_owned()),
        },
    );
    s.decide(3_000, "ok", Decision::Approved, "alice");
    let t = snap("cancellation_mid_run", &mut s);
    assert!(t.contains("run.cancel-requested") && t.contains("run.cancelled"));
    assert!(t.contains("→ cancel b#1"));
    assert_eq!(s.finished().len(), 1);
}

#[test]
fn recovered_running_attempt_is_retried() {
    let mut s = sim(
        "recover",
        r#"  steps:
    - id: long
      retries: {maxAttempts: 2, backoffSeconds: 2}
      run: {uses: "builtin:shell"}
"#,
    );
    s.script("long", vec![Scripted::ok(5_000)]);
    s.crash_at(1_000);
    let t = snap("recovered_running_attempt_is_retried", &mut s);
    assert!(t.contains("interrupted") && t.contains("start long#2"));
}

#[test]
fn timeout_reason() {
    let mut s = sim(
        "timeout",
        r#"  sandbox: {quotaSeconds: 10}
  steps:
    - {id: slow, timeoutSeconds: 2, run: {uses: "builtin:sleep"}}
"#,
    );
    s.script("slow", vec![Scripted::ok(60_000)]);
    let t = snap("timeout_reason", &mut s);
    assert!(t.contains("timeout=2s") && t.contains("reason=timeout"));
}

#[test]
fn secrets_masked() {
    let mut s = sim(
        "secrets",
        r#"  secrets:
    - {name: token}
  approvals:
    - {id: ok}
  steps:
    - {id: login, run: {uses: "builtin:shell", with: {env: {TOKEN: "{{ secrets.token }}"}}}}
    - {id: g, gate: {approval: {id: ok, message: "token is {{ secrets.token }}"}}}
  outputs:
    - {name: leaked, type: object, expression: "steps.login.outputs"}
"#,
    );
    s.secret("token", "s3cr3t-value");
    s.script(
        "login",
        vec![Scripted::outputs(100, json!({"echo": "got s3cr3t-value"}))],
    );
    s.decide(1_000, "ok", Decision::Approved, "alice");
    let t = snap("secrets_masked", &mut s);
    assert!(!t.contains("s3cr3t-value"));
    let state = serde_json::to_string(s.run().state()).unwrap();
    assert!(!state.contains("s3cr3t-value"));
    assert!(state.contains("got ***"));
}

#[test]
fn object_and_file_outputs() {
    let mut s = sim_with(
        "outputs",
        r#"  inputs:
    - {name: name, type: string, default: report}
  steps:
    - {id: write, run: {uses: "builtin:noop", with: {file: "out/r.json", count: 3, up: "../../etc/passwd", abs: /etc/passwd}}}
  outputs:
    - {name: report, type: file, path: "out/{{ inputs.name }}.json"}
    - {name: dynamic, type: file, path: "{{ steps.write.outputs.file }}"}
    - {name: escape, type: file, path: "x/{{ steps.write.outputs.up }}"}
    - {name: absolute, type: file, path: "{{ steps.write.outputs.abs }}"}
    - {name: summary, type: object, expression: "steps.write.outputs.count"}
    - {name: bad, type: object, expression: "abs(steps.write.outputs.file)"}
"#,
        json!({}),
    );
    let t = snap("object_and_file_outputs", &mut s);
    assert!(t.contains("path escapes the workspace"));
}

const UNION: &str = r#"  steps:
    - {id: test, run: {uses: "builtin:noop", with: {passed: false}}}
    - id: decide
      conditional:
        outputUnion: UNION
        branches:
          - when: steps.test.outputs.passed
            steps:
              - {id: build, run: {uses: "builtin:noop"}}
              - {id: release, run: {uses: "builtin:noop", with: {version: 1, url: "{{ steps.build.status }}"}}}
          - when: "steps.test.outputs.missing"
            steps: [{id: notify, run: {uses: "builtin:echo", with: {message: hi}}}]
        else: [{id: rollback, run: {uses: "builtin:noop", with: {reason: failed, version: 0}}}]
    - {id: after, run: {uses: "builtin:noop", with: {d: "{{ steps.decide.outputs }}"}}}
"#;

/// Rule 11 `outputUnion: true`: the taken branch's outputs plus the `with` keys of every other
/// branch whose last step is a `builtin:noop` run, missing ones `null`; `builtin:echo` adds
/// no key (its outputs are not known in the plan).
#[test]
fn conditional_output_union() {
    let mut s = sim("cond-union", &UNION.replace("UNION", "true"));
    let t = snap("conditional_output_union", &mut s);
    assert_eq!(
        s.run().step_outputs("decide"),
        Some(&json!({"reason": "failed", "version": 0, "url": null}))
    );
    assert!(t.contains(r#"with={"d":{"reason":"failed","url":null,"version":0}}"#));
}

/// `outputUnion: false`: only the taken branch's outputs.
#[test]
fn conditional_output_union_off() {
    let mut s = sim("cond-union-off", &UNION.replace("UNION", "false"));
    snap("conditional_output_union_off", &mut s);
    assert_eq!(
        s.run().step_outputs("decide"),
        Some(&json!({"reason": "failed", "version": 0}))
    );
}

/// `outputUnion: true` when the taken branch's last step produced nothing (skipped): every
/// known key is `null`.
#[test]
fn conditional_output_union_taken_branch_empty() {
    let mut s = sim(
        "cond-union-empty",
        r#"  steps:
    - {id: test, run: {uses: "builtin:noop", with: {passed: true}}}
    - id: decide
      conditional:
        outputUnion: true
        branches:
          - when: steps.test.outputs.passed
            steps: [{id: maybe, when: "steps.test.outputs.never", run: {uses: "builtin:noop", with: {a: 1}}}]
        else: [{id: other, run: {uses: "builtin:noop", with: {b: "{{ steps.test.outputs.passed }}"}}}]
"#,
    );
    s.finish().unwrap();
    assert_eq!(s.run().step_outputs("decide"), Some(&json!({"b": null})));
}

/// Run-time expressions get a context holding only the steps they name (for cost); inside an
/// iteration a sibling body step's id must still mean this iteration's instance (rule 10),
/// whether the loop was expanded while planning or at run time, and a whole-`steps` read
/// still sees every step.
#[test]
fn sibling_reference_resolves_to_same_iteration() {
    let mut s = sim(
        "siblings",
        r#"  steps:
    - {id: gen, run: {uses: "builtin:noop", with: {items: [10, 20, 30]}}}
    - id: planned
      loop:
        items: {static: [1, 2, 3]}
        steps:
          - {id: pa, run: {uses: "builtin:noop", with: {v: "{{ item }}"}}}
          - {id: pb, run: {uses: "builtin:noop", with: {got: "{{ steps.pa.outputs.v }}", it: "{{ item }}", gen: "{{ steps.gen.status }}"}}}
    - id: runtime
      loop:
        items: {expression: steps.gen.outputs.items}
        steps:
          - {id: ra, run: {uses: "builtin:noop", with: {v: "{{ item }}"}}}
          - {id: rb, run: {uses: "builtin:noop", with: {got: "{{ steps.ra.outputs.v }}", it: "{{ item }}", n: "{{ length(keys(steps)) }}"}}}
"#,
    );
    s.finish().unwrap();
    let out = |id: &str| s.run().step_outputs(id).cloned().unwrap();
    for (i, v) in [1, 2, 3].into_iter().enumerate() {
        let b = out(&format!("planned[{i}]::pb"));
        assert_eq!(b["got"], json!(v), "planned iteration {i}");
        assert_eq!(b["it"], json!(v));
        assert_eq!(b["gen"], json!("Succeeded"));
    }
    for (i, v) in [10, 20, 30].into_iter().enumerate() {
        let b = out(&format!("runtime[{i}]::rb"));
        assert_eq!(b["got"], json!(v), "runtime iteration {i}");
        assert_eq!(b["it"], json!(v));
    }
    // keys(steps) sees every attached step plus the iteration's template ids (ra, rb):
    // gen, planned, 6 planned children, runtime, 6 runtime children, ra, rb.
    assert_eq!(out("runtime[0]::rb")["n"], json!(17));
}
