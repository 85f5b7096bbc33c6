//! `--config FILE` (rule 28) as a user runs it: host executors, precedence of flags, environment
//! and file, and configuration errors with their line.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GREET_PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: greet, version: 1.0.0}\nspec:\n  steps:\n    - {id: hi, run: {uses: builtin:greet, with: {name: world}}}\n";
const NOOP_PACK: &str = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: nothing, version: 1.0.0}\nspec:\n  steps:\n    - {id: a, run: {uses: builtin:noop}}\n";

/// A fresh directory per test.
fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskrunner-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs the binary in `cwd` with no `TASKRUNNER_*` settings inherited, plus `env`.
fn taskrunner(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskrunner"));
    command.args(args).current_dir(cwd);
    for name in [
        "TASKRUNNER_DATA_DIR",
        "TASKRUNNER_SECRETS_DIR",
        "TASKRUNNER_DEFAULT_TENANT",
        "TASKRUNNER_LISTEN",
        "TASKRUNNER_AUTH",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn host_executor_from_config_runs_a_pack() {
    let d = dir("greet");
    let pack = write(&d, "greet.yaml", GREET_PACK);
    let config = write(
        &d,
        "taskrunner.toml",
        "[executors.\"builtin:greet\"]\ncommand = [\"/bin/echo\", \"hello {{ with.name }}\"]\n",
    );
    let out = taskrunner(&d, &["run", &pack, "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.ends_with("hi | hello world")),
        "{}",
        stdout(&out)
    );

    // The ndjson log carries the line as a step.output entry.
    let out = taskrunner(
        &d,
        &["run", &pack, "--config", &config, "--format", "ndjson"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outputs: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["eventType"] == "step.output")
        .collect();
    assert!(
        outputs.iter().any(|e| e["message"] == "hello world"),
        "{}",
        stdout(&out)
    );

    // Without the config the executor does not exist: the pack is rejected.
    let out = taskrunner(&d, &["run", &pack], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.steps[0].run.uses"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn data_dir_flag_beats_environment_beats_file() {
    let d = dir("precedence");
    let pack = write(&d, "noop.yaml", NOOP_PACK);
    // Relative to the config file's directory.
    let config = write(&d, "taskrunner.toml", "data_dir = \"from-file\"\n");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", pack.as_str(), "--config", config.as_str()];
        args.extend_from_slice(extra);
        let out = taskrunner(&d, &args, env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    let has_store = |name: &str| d.join(name).join("store").exists();

    run(&[], &[]);
    assert!(has_store("from-file"));

    run(&[], &[("TASKRUNNER_DATA_DIR", "from-env")]);
    assert!(has_store("from-env"));

    run(
        &["--data-dir", "from-flag"],
        &[("TASKRUNNER_DATA_DIR", "from-env-2")],
    );
    assert!(has_store("from-flag"));
    assert!(!d.join("from-env-2").exists());

    // Neither: the default, relative to the current directory.
    let out = taskrunner(&d, &["run", &pack], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(has_store("taskrunner-data"));
}

#[test]
fn resume_takes_the_config_too() {
    let d = dir("resume");
    let config = write(
        &d,
        "taskrunner.toml",
        "data_dir = \"data\"\ndefault_tenant = \"acme\"\n",
    );
    let out = taskrunner(&d, &["resume", "no-such-run", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no run no-such-run of tenant acme in"),
        "{err}"
    );
    assert!(err.contains("data"), "{err}");
}

#[test]
fn unknown_key_is_an_error_naming_the_line() {
    let d = dir("unknown");
    let pack = write(&d, "noop.yaml", NOOP_PACK);
    let config = write(
        &d,
        "taskrunner.toml",
        "data_dir = \"data\"\n\n[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\n",
    );
    let out = taskrunner(&d, &["run", &pack, "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {config}: line 5, column 1: unknown field `lisen`, expected one of `listen`, `auth`, `body_limit_bytes`, `header_read_timeout_seconds`, `shutdown_grace_seconds`, `spec_signing_key_file`, `max_drivers`, `jwt`\n"
        )
    );
    assert!(!d.join("data").exists(), "nothing runs on a bad config");

    let top = write(&d, "top.toml", "data-dir = \"data\"\n");
    let out = taskrunner(&d, &["run", &pack, "--config", &top], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: {top}: line 1, column 1: unknown field `data-dir`"
        )),
        "{}",
        stderr(&out)
    );

    let missing = d.join("missing.toml");
    let out = taskrunner(
        &d,
        &["run", &pack, "--config", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("error: {}: cannot read", missing.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn replacing_a_builtin_is_an_error() {
    let d = dir("replace");
    let pack = write(&d, "noop.yaml", NOOP_PACK);
    let config = write(
        &d,
        "taskrunner.toml",
        "[executors.\"builtin:shell\"]\ncommand = [\"/bin/sh\", \"-c\", \"{{ with.script }}\"]\n",
    );
    let out = taskrunner(&d, &["run", &pack, "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {config}: line 1, column 12: executor \"builtin:shell\" is built in and cannot be replaced by a host command\n"
        )
    );
}

/// The shipped example: its config and pack run, a hostile input reaches the host command as
/// one literal argument, and the host's `env` is set. Needs what a sealed, limited pack needs.
#[test]
fn shipped_example_runs_with_a_hostile_input_as_one_argument() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let d = dir("example");
    let out = taskrunner(
        &d,
        &[
            "run",
            examples.join("scan.yaml").to_str().unwrap(),
            "--config",
            examples.join("taskrunner.toml").to_str().unwrap(),
            "--data-dir",
            d.join("data").to_str().unwrap(),
            "--input",
            "target=; rm -rf /",
            "--format",
            "ndjson",
        ],
        &[],
    );
    let err = stderr(&out);
    if err.contains("NOT AVAILABLE") && out.status.code() != Some(0) {
        eprintln!("SKIPPED: this host lacks a sandbox control the example needs: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("scanning target=[; rm -rf /] depth=[2]"),
        "{text}"
    );
    assert!(text.contains("hello ; rm -rf /"), "{text}");
    assert!(
        text.contains("\"sandbox.network\":\"netns (loopback only)\""),
        "{text}"
    );
    assert!(err.contains("sandbox:"), "capabilities logged once: {err}");
}

#[test]
fn host_executor_env_and_timeout_are_validated() {
    let d = dir("exec-env");
    let pack = write(&d, "noop.yaml", NOOP_PACK);
    for (text, needle) in [
        (
            "[executors.\"builtin:x\"]\ncommand = [\"/bin/true\"]\ntimeoutSeconds = 0\n",
            "`timeoutSeconds` must be a positive integer",
        ),
        (
            "[executors.\"builtin:x\"]\ncommand = [\"/bin/true\"]\nenv = { \"A=B\" = \"x\" }\n",
            "invalid variable name",
        ),
    ] {
        let config = write(&d, "bad.toml", text);
        let out = taskrunner(&d, &["run", &pack, "--config", &config], &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr(&out).contains(needle), "{text}: {}", stderr(&out));
    }
}
