//! The CLI as a user runs it: exit codes, output formats, input flags, error lines.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok_pack(name: &str) -> String {
    root()
        .join("fixtures/packs/ok")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskrunner-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BAD: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: Bad_Name, version: 1.0.0}\nspec:\n  steps:\n    - id: a\n      run: {usse: builtin:noop}\n";

#[test]
fn validate_ok_and_invalid() {
    let good = run(&[
        "validate",
        &ok_pack("minimal.yaml"),
        &ok_pack("deep-nesting.yaml"),
    ]);
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(stdout(&good).contains("minimal.yaml: valid"));

    let bad = temp_file("bad.yaml", BAD);
    let out = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 3, "{err}");
    let prefix = format!("{}: ", bad.display());
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{err}");
    assert!(err.contains(": metadata.name: "), "{err}");
    assert!(err.contains(": spec.steps[0].run.usse: "), "{err}");
    assert!(err.contains("did you mean 'uses'"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn validate_json_prints_the_plan_error_response() {
    let bad = temp_file("bad-json.yaml", BAD);
    let out = run(&["validate", "--format", "json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert!(errors.len() >= 3);
    assert!(
        errors
            .iter()
            .all(|e| e["path"].is_string() && e["message"].is_string())
    );
}

#[test]
fn plan_prints_canonical_json_and_hash() {
    let pack = ok_pack("map-plan-time.yaml");
    let out = run(&["plan", &pack]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["schema"], "taskrunner.plan/v1");
    assert_eq!(
        plan["steps"][0]["children"][2]["id"],
        "deploy[2]::deploy-region"
    );

    let hash = run(&["plan", &pack, "--hash"]);
    let hash = stdout(&hash);
    let hash = hash.trim();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    // The printed hash is the hash of the canonical bytes, which equal the compact form of `plan`.
    let sim = run(&["simulate", &pack]);
    let sim: Value = serde_json::from_str(&stdout(&sim)).unwrap();
    assert_eq!(sim["planHash"], hash);

    let tree = run(&["plan", &pack, "--format", "tree"]);
    assert!(
        stdout(&tree).contains("└─ deploy (Map)"),
        "{}",
        stdout(&tree)
    );
}

#[test]
fn inputs_from_flags_and_files() {
    let pack = ok_pack("contract-basic-simulation.yaml");
    let missing = run(&["plan", &pack, "--hash"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("inputs.target"),
        "{}",
        stderr(&missing)
    );

    let by_flag = run(&[
        "plan",
        &pack,
        "--hash",
        "--input",
        "target=registry.example.com/app:v1.2.3",
    ]);
    assert_eq!(by_flag.status.code(), Some(0), "{}", stderr(&by_flag));
    let json_file = temp_file(
        "in.json",
        r#"{"target": "registry.example.com/app:v1.2.3"}"#,
    );
    let by_json = run(&[
        "plan",
        &pack,
        "--hash",
        "--inputs",
        json_file.to_str().unwrap(),
    ]);
    let yaml_file = temp_file("in.yaml", "target: registry.example.com/app:v1.2.3\n");
    let by_yaml = run(&[
        "plan",
        &pack,
        "--hash",
        "--inputs",
        yaml_file.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&by_flag), stdout(&by_json));
    assert_eq!(stdout(&by_flag), stdout(&by_yaml));

    // A string input keeps 123 as "123"; --input wins over --inputs.
    let numeric = run(&[
        "plan",
        &pack,
        "--input",
        "target=123",
        "--inputs",
        json_file.to_str().unwrap(),
    ]);
    let plan: Value = serde_json::from_str(&stdout(&numeric)).unwrap();
    assert_eq!(plan["inputs"]["target"], Value::String("123".into()));

    let undeclared = run(&["plan", &pack, "--input", "target=x", "--input", "tagret=y"]);
    assert_eq!(undeclared.status.code(), Some(2));
    assert!(
        stderr(&undeclared).contains("inputs.tagret"),
        "{}",
        stderr(&undeclared)
    );
}

#[test]
fn simulate_table_and_exit_codes() {
    let table = run(&[
        "simulate",
        &ok_pack("contract-create-run.yaml"),
        "--format",
        "table",
    ]);
    assert_eq!(table.status.code(), Some(0));
    let text = stdout(&table);
    assert!(text.contains("RequiresApproval"), "{text}");
    assert!(text.contains("pending approvals: yes"), "{text}");

    let missing = run(&["simulate", "no-such-file.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("error: cannot read no-such-file.yaml"),
        "{}",
        stderr(&missing)
    );

    let bad_flag = run(&["plan", &ok_pack("minimal.yaml"), "--input", "novalue"]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(stderr(&bad_flag).contains("expected NAME=VALUE"));

    let usage = run(&["frobnicate"]);
    assert_eq!(usage.status.code(), Some(1));
}

#[test]
fn binary_input_is_an_error_not_a_panic() {
    let path = temp_file("binary.yaml", "");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    // Not UTF-8 is an invalid pack (exit 2) and the other files are still validated.
    let out = run(&["validate", path.to_str().unwrap(), &ok_pack("minimal.yaml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("minimal.yaml: valid"),
        "{}",
        stdout(&out)
    );
    let json = run(&["validate", "--format", "json", path.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(2));
    let v: Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(v["errors"][0]["path"], "");

    // An inputs file that is not valid YAML is invalid input (exit 2), with its position.
    let inputs = temp_file("dup.yaml", "target: a\ntarget: b\n");
    let pack = ok_pack("contract-basic-simulation.yaml");
    let dup = run(&["plan", &pack, "--inputs", inputs.to_str().unwrap()]);
    assert_eq!(dup.status.code(), Some(2), "{}", stderr(&dup));
    assert!(stderr(&dup).contains("duplicate"), "{}", stderr(&dup));
    // YAML 1.2 core: `yes` in an inputs file is a string.
    let yes = temp_file("yes.yaml", "target: yes\n");
    let out = run(&["plan", &pack, "--inputs", yes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["inputs"]["target"], "yes");
}

#[test]
fn run_resume_with_actors_and_gates() {
    let dir = std::env::temp_dir().join(format!("taskrunner-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let pack = temp_file(
        "two.yaml",
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: two, version: 1.0.0}\nspec:\n  approvals: [{id: both, requiredApprovals: 2}]\n  steps:\n    - {id: g, gate: {approval: {id: both}}}\n    - {id: s, run: {uses: builtin:shell, with: {script: \"printf 'a\\\\033[31mb\\\\n'\"}}}\n",
    );
    let pack = pack.to_str().unwrap();
    // An unknown approval id is refused before anything is created.
    let bad = run(&[
        "run",
        pack,
        "--run-id",
        "g1",
        "--data-dir",
        data,
        "--approve",
        "nope",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("no approval 'nope'"),
        "{}",
        stderr(&bad)
    );
    // Two distinct actors pass a gate that needs two approvals.
    let first = run(&[
        "run",
        pack,
        "--run-id",
        "g1",
        "--data-dir",
        data,
        "--approve",
        "both",
        "--actor",
        "alice",
    ]);
    assert_eq!(first.status.code(), Some(5), "{}", stderr(&first));
    let again = run(&[
        "resume",
        "g1",
        "--data-dir",
        data,
        "--approve",
        "both",
        "--actor",
        "alice",
    ]);
    assert_eq!(
        again.status.code(),
        Some(5),
        "the same actor counts once: {}",
        stderr(&again)
    );
    let second = run(&[
        "resume",
        "g1",
        "--data-dir",
        data,
        "--approve",
        "both",
        "--actor",
        "bob",
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    // Control characters a step prints are shown escaped, never sent to the terminal.
    let out = stdout(&second);
    assert!(out.contains("s | a\\u{1b}[31mb"), "{out}");
    assert!(!out.contains('\u{1b}'), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_refuses_a_run_whose_required_secret_is_gone() {
    let dir = std::env::temp_dir().join(format!("taskrunner-cli-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let pack = temp_file(
        "sec.yaml",
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: sec, version: 1.0.0}\nspec:\n  secrets: [{name: token}]\n  approvals: [{id: ok}]\n  steps:\n    - {id: g, gate: {approval: {id: ok}}}\n    - {id: use, run: {uses: builtin:shell, with: {script: 'test -n \"$T\"', env: {T: \"{{ secrets.token }}\"}}}}\n",
    );
    let first = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args([
            "run",
            pack.to_str().unwrap(),
            "--run-id",
            "s1",
            "--data-dir",
            data,
        ])
        .env("TASKRUNNER_SECRET_TOKEN", "value-1234")
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(5), "{}", stderr(&first));
    let without = run(&["resume", "s1", "--data-dir", data, "--approve", "ok"]);
    assert_eq!(without.status.code(), Some(2), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("required secret 'token'"),
        "{}",
        stderr(&without)
    );
    let with = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .args(["resume", "s1", "--data-dir", data, "--approve", "ok"])
        .env("TASKRUNNER_SECRET_TOKEN", "value-1234")
        .output()
        .unwrap();
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    let _ = std::fs::remove_dir_all(&dir);
}

fn diff_pair(name: &str, side: &str) -> String {
    root()
        .join("fixtures/diff")
        .join(name)
        .join(format!("{side}.yaml"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn diff_exit_codes_formats_and_sides() {
    let (old, new) = (
        diff_pair("02-with-parameter", "old"),
        diff_pair("02-with-parameter", "new"),
    );
    // Changes: exit 1, one line of text.
    let out = run(&["diff", &old, &new]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "~ step build with.script: \"make build\" → \"make build-release\"\n"
    );
    // JSON: the versioned document, the same as the golden file.
    let out = run(&["diff", "--format", "json", &old, &new]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/diff/02-with-parameter/expected.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v, golden);
    assert_eq!(v["schema"], "taskrunner.plan-diff/v1");

    // A plan document printed by `taskrunner plan` against its own pack: no change, exit 0.
    let plan = run(&["plan", &old]);
    assert_eq!(plan.status.code(), Some(0));
    let plan_file = temp_file("diff-old-plan.json", &stdout(&plan));
    let out = run(&["diff", plan_file.to_str().unwrap(), &old]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no change\n");
    let out = run(&[
        "diff",
        plan_file.to_str().unwrap(),
        &new,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn diff_inputs_per_side() {
    let pack = diff_pair("10-inputs-changed", "old");
    let same = run(&["diff", &pack, &pack, "--old-input", "image=app:v1"]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    let inputs = temp_file("diff-new-inputs.json", r#"{"image": "app:v9"}"#);
    let out = run(&[
        "diff",
        &pack,
        &pack,
        "--new-inputs",
        inputs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("~ input image: \"app:v1\" → \"app:v9\"\n"),
        "{}",
        stdout(&out)
    );
    // --new-input wins over --new-inputs.
    let out = run(&[
        "diff",
        &pack,
        &pack,
        "--new-inputs",
        inputs.to_str().unwrap(),
        "--new-input",
        "image=app:v1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn diff_invalid_sides_exit_2() {
    let good = diff_pair("02-with-parameter", "old");
    let bad = temp_file("diff-bad.yaml", BAD);
    let out = run(&["diff", &good, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("metadata.name"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    let missing = root().join("fixtures/diff/no-such.yaml");
    let out = run(&["diff", missing.to_str().unwrap(), &good]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    let tampered = temp_file(
        "diff-tampered.json",
        r#"{"schema": "taskrunner.plan/v1", "pack": {}}"#,
    );
    let out = run(&["diff", tampered.to_str().unwrap(), &good]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a valid taskrunner.plan/v1 document"));

    let plan = run(&["plan", &good]);
    let plan_file = temp_file("diff-plan-inputs.json", &stdout(&plan));
    let out = run(&[
        "diff",
        plan_file.to_str().unwrap(),
        &good,
        "--old-input",
        "a=b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("inputs are already resolved"));

    let out = run(&["diff", &good, &good, "--new-input", "noequals"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn approvals_lists_the_ledger_of_the_embedded_store() {
    let dir = std::env::temp_dir().join(format!("taskrunner-cli-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let pack = temp_file(
        "ledger.yaml",
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: ledger, version: 1.0.0}\nspec:\n  approvals: [{id: both, requiredApprovals: 2}]\n  steps:\n    - {id: g, gate: {approval: {id: both}}}\n    - {id: s, run: {uses: builtin:noop}}\n",
    );
    let pack = pack.to_str().unwrap();
    // No store yet: a clear error.
    let missing = run(&["approvals", "--data-dir", data]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("no store"),
        "{}",
        stderr(&missing)
    );

    let first = run(&[
        "run",
        pack,
        "--run-id",
        "l1",
        "--data-dir",
        data,
        "--approve",
        "both",
        "--actor",
        "alice",
    ]);
    assert_eq!(first.status.code(), Some(5), "{}", stderr(&first));
    let pending = run(&["approvals", "--data-dir", data, "--status", "pending"]);
    assert!(pending.status.success(), "{}", stderr(&pending));
    let text = stdout(&pending);
    assert!(
        text.contains("l1  ledger@1.0.0  g (both)  pending  1/2  alice approved at"),
        "{text}"
    );
    let decided = run(&["approvals", "--data-dir", data, "--status", "decided"]);
    assert_eq!(stdout(&decided), "no approval gates\n");

    let second = run(&[
        "resume",
        "l1",
        "--data-dir",
        data,
        "--approve",
        "both",
        "--actor",
        "bob",
    ]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let export = run(&[
        "approvals",
        "--data-dir",
        data,
        "--status",
        "decided",
        "--format",
        "ndjson",
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    let lines: Vec<serde_json::Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["runId"], "l1");
    assert_eq!(lines[0]["status"], "decided");
    assert_eq!(lines[0]["stepStatus"], "Succeeded");
    let actors: Vec<&str> = lines[0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["alice", "bob"]);

    let bad = run(&["approvals", "--data-dir", data, "--status", "open"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--status must be"),
        "{}",
        stderr(&bad)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
