//! `cargo xtask <command>`: argument parsing and cargo invocations; the checks live in the lib.

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use xtask::{cargo, tidy, workspace_root};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                        cargo fmt --check, clippy -D warnings, test --workspace (tidy included)
  tidy                      run the tidy checks and print what they find
  bench plan                cargo bench -p taskrunner-plan --bench plan
  bench engine              cargo bench -p taskrunner-runtime --bench engine
  bench http                cargo bench -p taskrunner --bench http (server over TCP vs raw hyper)
  bench postgres            cargo bench -p taskrunner-runtime --bench postgres (replicas vs pgbench)
  fuzz <target> [seconds]   cargo fuzz run <target> in fuzz/ (default 60 seconds)";

const FUZZ_SECONDS_DEFAULT: u64 = 60;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["ci"] => ci(),
        ["tidy"] => tidy(),
        ["bench", "engine"] => run_cargo(
            "bench engine",
            &["bench", "-p", "taskrunner-runtime", "--bench", "engine"],
        ),
        ["bench", "http"] => run_cargo(
            "bench http",
            &["bench", "-p", "taskrunner", "--bench", "http"],
        ),
        ["bench", "postgres"] => run_cargo(
            "bench postgres",
            &["bench", "-p", "taskrunner-runtime", "--bench", "postgres"],
        ),
        ["bench", "plan"] => run_cargo(
            "bench plan",
            &["bench", "-p", "taskrunner-plan", "--bench", "plan"],
        ),
        ["fuzz", target] => fuzz(target, FUZZ_SECONDS_DEFAULT),
        ["fuzz", target, seconds] => {
            let seconds = seconds
                .parse()
                .with_context(|| format!("`{seconds}` is not a number of seconds"))?;
            fuzz(target, seconds)
        }
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n\n{USAGE}"),
    }
}

/// fmt, clippy, tests — in that order, stopping at the first failure.
fn ci() -> anyhow::Result<()> {
    let steps: [(&str, &[&str]); 3] = [
        ("fmt", &["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("test", &["test", "--workspace"]),
    ];
    for (name, args) in steps {
        run_cargo(name, args)?;
    }
    eprintln!("xtask ci: all steps passed");
    Ok(())
}

fn tidy() -> anyhow::Result<()> {
    let mut failed = 0;
    for (check, violations) in tidy::run_all(&workspace_root())? {
        if violations.is_empty() {
            println!("ok    {check}");
        } else {
            failed += 1;
            println!("FAIL  {check}\n{}", tidy::format_violations(&violations));
        }
    }
    if failed > 0 {
        bail!("{failed} tidy check(s) failed");
    }
    Ok(())
}

fn fuzz(target: &str, seconds: u64) -> anyhow::Result<()> {
    let dir = workspace_root().join("fuzz");
    if !dir.is_dir() {
        bail!("no fuzz/ directory at {}", dir.display());
    }
    let max_total_time = format!("-max_total_time={seconds}");
    // `cargo` from PATH (not $CARGO) so a rustup toolchain override for fuzz/ can apply.
    let status = Command::new("cargo")
        .current_dir(&dir)
        .args(["fuzz", "run", target, "-s", "none", "--", &max_total_time])
        .status()
        .context("failed to start `cargo fuzz` (install it with `cargo install cargo-fuzz`)")?;
    if !status.success() {
        bail!("step `fuzz {target}` failed ({status})");
    }
    Ok(())
}

/// Runs `cargo <args>` in the workspace root; a failure names the step.
fn run_cargo(step: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: [{step}] cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args(args)
        .status()
        .with_context(|| format!("failed to start cargo for step `{step}`"))?;
    if !status.success() {
        bail!("step `{step}` failed ({status}): cargo {}", args.join(" "));
    }
    Ok(())
}
