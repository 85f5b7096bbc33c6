//! The semantic plan diff (`taskrunner_plan::diff`): golden pairs under `fixtures/diff/`
//! (one folder per pair: `old.yaml`, `new.yaml`, optional `old.inputs.json`/`new.inputs.json`,
//! and the expected `expected.json` and `expected.txt`), plus the cases an approver relies on.
//!
//! `TASKRUNNER_BLESS=1 cargo test -p taskrunner-plan --test diff` rewrites the expected files
//! (review them with `git diff` before committing).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use taskrunner_plan::{Op, Plan, Section, diff, plan_yaml};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/diff")
}

fn inputs(path: &Path) -> Map<String, Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => Map::new(),
    }
}

fn plan_side(dir: &Path, side: &str) -> Plan {
    let yaml = std::fs::read_to_string(dir.join(format!("{side}.yaml"))).unwrap();
    let inputs = inputs(&dir.join(format!("{side}.inputs.json")));
    plan_yaml(&yaml, &inputs)
        .unwrap_or_else(|e| panic!("{}/{side}.yaml: {:?}", dir.display(), e.to_response()))
}

fn check_or_bless(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("TASKRUNNER_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!("{} is missing", path.display())),
    }
}

#[test]
fn golden_pairs() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "expected ~20 pairs, found {}", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let (old, new) = (plan_side(dir, "old"), plan_side(dir, "new"));
        let d = diff(&old, &new);
        let json = format!("{}\n", serde_json::to_string_pretty(&d.to_json()).unwrap());
        check_or_bless(&dir.join("expected.json"), &json, &mut failures);
        check_or_bless(&dir.join("expected.txt"), &d.to_text(), &mut failures);
        // The diff is empty exactly when the hashes are equal, in both directions.
        assert_eq!(d.is_empty(), old.hash() == new.hash(), "{}", dir.display());
        assert_eq!(
            diff(&new, &old).is_empty(),
            d.is_empty(),
            "{}",
            dir.display()
        );
        assert!(diff(&new, &new).is_empty());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn pack(steps: &str, extra: &str) -> String {
    format!(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {{name: big, version: 1.0.0}}\nspec:\n{extra}  steps:\n{steps}"
    )
}

#[test]
fn a_thousand_steps_with_one_changed_parameter_is_one_line() {
    let steps = |changed: usize| {
        (0..1000)
            .map(|i| {
                let tag = if i == changed { "v2" } else { "v1" };
                format!(
                    "    - id: s{i}\n      run: {{uses: \"builtin:echo\", with: {{message: \"step {i} {tag}\"}}}}\n"
                )
            })
            .collect::<String>()
    };
    let old = plan_yaml(&pack(&steps(usize::MAX), ""), &Map::new()).unwrap();
    let new = plan_yaml(&pack(&steps(517), ""), &Map::new()).unwrap();
    assert_eq!(old.step_count(), 1000);
    let d = diff(&old, &new);
    assert_eq!(
        d.to_text(),
        "~ step s517 with.message: \"step 517 v1\" → \"step 517 v2\"\n"
    );
    assert_eq!(d.changes.len(), 1);
}

#[test]
fn a_thousand_iterations_with_one_changed_parameter_is_one_line() {
    let body = |image: &str| {
        pack(
            &format!(
                "    - id: fan\n      map:\n        items: inputs.n\n        step:\n          id: one\n          run: {{uses: \"builtin:echo\", with: {{message: \"{{{{ item }}}}\", image: {image}}}}}\n"
            ),
            "  inputs:\n    - {name: n, type: array}\n",
        )
    };
    let mut inputs = Map::new();
    inputs.insert("n".into(), json!((0..1000).collect::<Vec<_>>()));
    let old = plan_yaml(&body("app-v1"), &inputs).unwrap();
    let new = plan_yaml(&body("app-v2"), &inputs).unwrap();
    assert_eq!(old.step_count(), 1001);
    let d = diff(&old, &new);
    assert_eq!(
        d.to_text(),
        "~ step fan[*]::one (1000 iterations) with.image: \"app-v1\" → \"app-v2\"\n"
    );
    let change = &d.changes[0];
    assert_eq!(change.steps.len(), 1000);
    assert!(
        change.instances.is_empty(),
        "uniform values need no instances"
    );
}

#[test]
fn identical_hashes_say_no_change() {
    let yaml = pack("    - id: a\n      run: {uses: \"builtin:noop\"}\n", "");
    let (a, b) = (
        plan_yaml(&yaml, &Map::new()).unwrap(),
        plan_yaml(&yaml, &Map::new()).unwrap(),
    );
    let d = diff(&a, &b);
    assert!(d.is_empty());
    assert_eq!(d.to_text(), "no change\n");
    let j = d.to_json();
    assert_eq!(j["identical"], json!(true));
    assert_eq!(j["schema"], json!("taskrunner.plan-diff/v1"));
    assert_eq!(j["changes"], json!([]));
    assert_eq!(j["old"]["planHash"], json!(a.hash()));
}

#[test]
fn sandbox_changes_are_security_relevant() {
    let dir = fixtures_dir().join("13-sandbox-changed");
    let d = diff(&plan_side(&dir, "old"), &plan_side(&dir, "new"));
    let sandbox: Vec<_> = d
        .changes
        .iter()
        .filter(|c| c.section == Section::Sandbox)
        .collect();
    assert!(sandbox.len() >= 3, "{:?}", d.to_text());
    assert!(sandbox.iter().all(|c| c.security_relevant));
    assert!(
        sandbox
            .iter()
            .any(|c| c.op == Op::Added && c.new == Some(json!("uploads.example.net:443")))
    );
    assert!(d.security_relevant());
    assert!(d.to_text().contains("[security-relevant]"));
}

#[test]
fn templates_show_as_templates_and_secrets_by_name() {
    let dir = fixtures_dir().join("09-secret-and-template-parameters");
    let text = diff(&plan_side(&dir, "old"), &plan_side(&dir, "new")).to_text();
    assert!(
        text.contains("with.token: {{ secrets.registry_token }} → {{ secrets.deploy_key }}"),
        "{text}"
    );
}

#[test]
fn a_plan_read_back_from_its_canonical_json_diffs_as_the_original() {
    let dir = fixtures_dir().join("02-with-parameter");
    let (old, new) = (plan_side(&dir, "old"), plan_side(&dir, "new"));
    let decoded = Plan::from_canonical_json(old.canonical_json(), Some(old.hash())).unwrap();
    assert!(diff(&decoded, &old).is_empty());
    assert_eq!(diff(&decoded, &new).to_json(), diff(&old, &new).to_json());
}
