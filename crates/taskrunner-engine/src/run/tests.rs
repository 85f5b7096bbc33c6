use serde_json::{Map, json};
use taskrunner_expr::Expression;

use super::context::Need;
use super::expansion::range;
use super::outputs::workspace_path;
use super::*;

#[test]
fn workspace_paths() {
    assert_eq!(workspace_path("out/./a.json"), Ok("out/a.json".to_owned()));
    for bad in [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "C:\\x",
        "\\\\srv\\x",
        "a/..",
    ] {
        assert_eq!(
            workspace_path(bad),
            Err("path escapes the workspace".to_owned())
        );
    }
    assert!(workspace_path("").is_err());
    assert!(workspace_path("./").is_err());
}

#[test]
fn ranges() {
    assert_eq!(range(0, 3, 1, 10), vec![json!(0), json!(1), json!(2)]);
    assert_eq!(range(3, 0, -2, 10), vec![json!(3), json!(1)]);
    assert_eq!(range(0, 100, 1, 3).len(), 4);
    assert!(range(0, 3, 0, 10).is_empty());
}

fn need(src: &str) -> Need {
    Need::of(&[&Expression::parse(src).unwrap()])
}

#[test]
fn needs() {
    let ids = |v: &[&str]| Need::Ids(v.iter().map(|s| (*s).to_owned()).collect());
    assert_eq!(need("steps.a.outputs.x"), ids(&["a"]));
    assert_eq!(
        need("steps.\"a-b\".status == 'x' && steps.c"),
        ids(&["a-b", "c"])
    );
    assert_eq!(need("steps | b.outputs"), ids(&["b"]));
    assert_eq!(need("inputs.x"), ids(&[]));
    assert_eq!(need("keys(steps)"), Need::All);
    assert_eq!(need("steps.*.status"), Need::All);
    assert_eq!(need("@"), Need::All);
    assert_eq!(need("length(@)"), Need::All);
}

/// At every step of a run with nested iterations, each expression gives the same value
/// with the context limited to what it names as with the full context.
#[test]
fn limited_context_evaluates_like_the_full_one() {
    let yaml = r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: ctx, version: 1.0.0}
spec:
  steps:
    - {id: gen, run: {uses: "builtin:noop", with: {items: [1, 2]}}}
    - id: outer
      loop:
        items: {expression: steps.gen.outputs.items}
        steps:
          - {id: a, run: {uses: "builtin:noop", with: {v: "{{ item }}"}}}
          - id: inner
            map:
              items: "[steps.a.outputs.v, `7`]"
              step: {id: w, run: {uses: "builtin:noop", with: {got: "{{ steps.a.outputs.v }}", i: "{{ item }}"}}}
          - {id: b, run: {uses: "builtin:noop", with: {w: "{{ steps.inner.outputs }}", a: "{{ steps.a }}"}}}
    - {id: last, run: {uses: "builtin:noop", with: {o: "{{ steps.outer.outputs }}"}}}
"#;
    let plan = Arc::new(taskrunner_plan::plan_yaml(yaml, &Map::new()).unwrap());
    let info = RunInfo {
        run_id: "r".to_owned(),
        tenant: "t".to_owned(),
    };
    let secrets = Secrets::new();
    let mut run = Run::new(plan.clone(), info, Timestamp(0));
    let exprs: Vec<Expression> = [
        "steps.a.outputs.v",
        "steps.w",
        "steps.b.status",
        "steps.gen.outputs.items[0]",
        "steps.\"outer[1]::a\".outputs",
        "steps.outer.status",
        "[steps.a, steps.inner.outputs, item, index]",
        "keys(steps)",
        "steps.nope",
    ]
    .iter()
    .map(|s| Expression::parse(s).unwrap())
    .collect();
    let mut queue = vec![Event::Started];
    let mut checked = 0;
    while let Some(event) = queue.pop() {
        for cmd in run.apply(Timestamp(0), &event, &secrets) {
            if let Command::StartAttempt {
                step_id,
                attempt,
                with,
                ..
            } = cmd
            {
                let outputs = match with {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                queue.insert(
                    0,
                    Event::AttemptFinished {
                        step_id,
                        attempt,
                        outcome: AttemptOutcome::Succeeded { outputs },
                    },
                );
            }
        }
        let mut state = run.state.clone();
        let cx = Cx {
            plan: &plan,
            st: &mut state,
            secrets: &secrets,
            now: Timestamp(0),
            cmds: Vec::new(),
            touched: 0,
        };
        for at in dfs(cx.st).into_iter().map(Some).chain([None]) {
            let full = cx.context(at);
            for e in &exprs {
                let limited = cx.context_for(at, &Need::of(&[e]));
                assert_eq!(e.evaluate(&limited), e.evaluate(&full), "{e} at {at:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(run.status(), RunStatus::Succeeded);
    assert_eq!(
        run.step_outputs("outer[1]::b").unwrap()["w"],
        json!([{"got": 2, "i": 2}, {"got": 2, "i": 7}])
    );
    assert!(checked > 500, "{checked}");
}

#[test]
fn durations() {
    assert_eq!(duration(1500), "1.500s");
    assert_eq!(duration(-3), "0.000s");
}
