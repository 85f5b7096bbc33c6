//! Data-driven snapshot tests over `fixtures/packs/{ok,err}` (one test per folder).
//!
//! For each valid pack: the pretty canonical plan, its hash and the simulation are snapshotted
//! (`fixtures/snapshots/ok/`); for each invalid pack: every diagnostic (`fixtures/snapshots/err/`,
//! and `fixtures/snapshots/plan-err/` for packs that validate but cannot be planned).
//! A pack's inputs, when it needs any, sit beside it as `<name>.inputs.json`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn packs(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join("packs").join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn inputs_for(pack: &Path) -> Map<String, Value> {
    let path = pack.with_extension("inputs.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => Map::new(),
    }
}

fn settings(folder: &str) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(fixtures_dir().join("snapshots").join(folder));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

fn name_of(pack: &Path) -> String {
    pack.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn ok() {
    let files = packs("ok");
    assert!(
        files.len() >= 30,
        "expected at least 30 valid packs, found {}",
        files.len()
    );
    let settings = settings("ok");
    for pack in files {
        let name = name_of(&pack);
        let yaml = std::fs::read_to_string(&pack).unwrap();
        let inputs = inputs_for(&pack);
        let plan = taskrunner_plan::plan_yaml(&yaml, &inputs)
            .unwrap_or_else(|e| panic!("{name}: expected a valid pack, got:\n{e}"));
        // Determinism: planning again gives the same bytes.
        let again = taskrunner_plan::plan_yaml(&yaml, &inputs).unwrap();
        assert_eq!(
            plan.canonical_json(),
            again.canonical_json(),
            "{name}: plan bytes differ"
        );
        let hash = plan.hash();
        assert!(
            hash.len() == 71
                && hash.starts_with("sha256:")
                && hash[7..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{name}: bad hash {hash}"
        );
        assert_eq!(
            hash,
            taskrunner_plan::hash_bytes(plan.canonical_json().as_bytes())
        );
        // A stored plan reads back to the same bytes and hash (and is checked on the way in).
        let stored = taskrunner_plan::Plan::from_canonical_json(plan.canonical_json(), Some(hash))
            .unwrap_or_else(|e| panic!("{name}: stored plan does not read back: {e}"));
        assert_eq!(stored.canonical_json(), plan.canonical_json(), "{name}");
        assert_eq!(stored.step_count(), plan.step_count(), "{name}");
        let sim = serde_json::to_string_pretty(&taskrunner_plan::simulate(&plan)).unwrap();
        let snapshot = format!(
            "hash: {hash}\n\n--- plan ---\n{}\n--- simulation ---\n{sim}\n",
            plan.to_pretty_json()
        );
        settings.bind(|| insta::assert_snapshot!(name, snapshot));
    }
}

/// Packs that validate but cannot be planned (or whose inputs are wrong): `fixtures/packs/plan-err`.
#[test]
fn plan_err() {
    let files = packs("plan-err");
    assert!(
        files.len() >= 10,
        "expected plan-error packs, found {}",
        files.len()
    );
    let settings = settings("plan-err");
    for pack in files {
        let name = name_of(&pack);
        let yaml = std::fs::read_to_string(&pack).unwrap();
        taskrunner_manifest::parse(&yaml).unwrap_or_else(|e| {
            panic!("{name}: should pass validation and fail planning, got:\n{e}")
        });
        let error = match taskrunner_plan::plan_yaml(&yaml, &inputs_for(&pack)) {
            Ok(_) => panic!("{name}: expected plan errors, the pack planned"),
            Err(e) => e,
        };
        let snapshot = format!(
            "{}\n\n--- PlanErrorResponse ---\n{}",
            error.diagnostics(),
            serde_json::to_string_pretty(&error.to_response()).unwrap()
        );
        settings.bind(|| insta::assert_snapshot!(name, snapshot));
    }
}

#[test]
fn err() {
    let files = packs("err");
    assert!(
        files.len() >= 25,
        "expected at least 25 invalid packs, found {}",
        files.len()
    );
    let settings = settings("err");
    for pack in files {
        let name = name_of(&pack);
        let yaml = std::fs::read_to_string(&pack).unwrap();
        let inputs = inputs_for(&pack);
        let error = match taskrunner_plan::plan_yaml(&yaml, &inputs) {
            Ok(_) => panic!("{name}: expected diagnostics, the pack planned"),
            Err(e) => e,
        };
        let snapshot = error.diagnostics().to_string();
        settings.bind(|| insta::assert_snapshot!(name, snapshot));
    }
}

#[test]
fn stored_plans_are_checked_on_the_way_in() {
    let pack = fixtures_dir().join("packs/ok/deep-nesting.yaml");
    let plan =
        taskrunner_plan::plan_yaml(&std::fs::read_to_string(pack).unwrap(), &Map::new()).unwrap();
    let text = plan.canonical_json();
    let wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    assert!(matches!(
        taskrunner_plan::Plan::from_canonical_json(text, Some(wrong)),
        Err(taskrunner_plan::DecodeError::HashMismatch { .. })
    ));
    let tampered = text.replace("\"maxParallel\":3", "\"maxParallel\":4");
    assert_ne!(tampered, text);
    let reread = taskrunner_plan::Plan::from_canonical_json(&tampered, Some(plan.hash()));
    assert!(
        matches!(
            reread,
            Err(taskrunner_plan::DecodeError::HashMismatch { .. })
        ),
        "{reread:?}"
    );
    let pretty = plan.to_pretty_json();
    assert!(matches!(
        taskrunner_plan::Plan::from_canonical_json(&pretty, None),
        Ok(p) if p.hash() == plan.hash()
    ));
    let unknown = text.replace("\"kind\":\"Parallel\"", "\"kind\":\"Teleport\"");
    assert!(matches!(
        taskrunner_plan::Plan::from_canonical_json(&unknown, None),
        Err(taskrunner_plan::DecodeError::Invalid { .. })
    ));
    assert!(matches!(
        taskrunner_plan::Plan::from_canonical_json("{", None),
        Err(taskrunner_plan::DecodeError::Json(_))
    ));
}
