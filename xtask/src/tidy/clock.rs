//! One clock in the runtime: every clock read, sleep and timer of `taskrunner-runtime` goes
//! through its `Clock` port, so tests can run the runtime in virtual time.
//!
//! The rule: no file of `crates/taskrunner-runtime/src/` other than `ports.rs` (where the port
//! and `SystemClock` live) mentions [`CLOCK_APIS`]: `Instant`, `SystemTime`, `tokio::time`
//! (also as `time` inside a `use tokio::{…}` group) or `std::thread::sleep` (also as
//! `thread::sleep`). Comments and string literals are ignored; `#[cfg(test)]` code is scanned
//! too (a unit test that sleeps for real is what the rule is there to prevent). There is no
//! escape hatch: a new need for time is a new method of the port.

use std::path::Path;

use anyhow::Context as _;

use super::{blank_comments_and_literals, find_token, rs_files};

/// The runtime crate whose sources are checked.
pub const RUNTIME_SRC: &str = "crates/taskrunner-runtime/src";
/// The one file allowed to read a clock: the `Clock` port and `SystemClock`.
pub const PORT_FILE: &str = "ports.rs";

/// What reads a clock, sleeps or arms a timer outside the port.
pub const CLOCK_APIS: &[&str] = &[
    "Instant",
    "SystemTime",
    "tokio::time",
    "std::thread::sleep",
    "thread::sleep",
];

/// Checks one source file of the runtime; `display` names it in messages.
pub fn check_source(display: &str, contents: &str) -> Vec<String> {
    let code = blank_comments_and_literals(contents);
    let mut violations = Vec::new();
    for (index, line) in code.split('\n').enumerate() {
        // `std::thread::sleep` also contains `thread::sleep`: report the first match only.
        if let Some(api) = CLOCK_APIS
            .iter()
            .find(|api| find_token(line, api).is_some())
        {
            violations.push(message(display, index, api));
        }
    }
    for index in tokio_time_in_groups(&code) {
        violations.push(message(display, index, "tokio::{time}"));
    }
    violations
}

fn message(display: &str, index: usize, api: &str) -> String {
    format!(
        "{display}:{}: {api} outside the runtime's Clock port (use `shared.clock`: now, \
         monotonic, sleep; see {RUNTIME_SRC}/{PORT_FILE})",
        index + 1
    )
}

/// 0-based lines where a `tokio::{ … }` group names `time` at its top level.
fn tokio_time_in_groups(code: &str) -> Vec<usize> {
    const OPEN: &str = "tokio::{";
    let mut lines = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find(OPEN) {
        let start = from + offset + OPEN.len();
        let mut depth = 1usize;
        let mut item_start = start;
        let mut end = code.len();
        for (i, c) in code[start..].char_indices() {
            let at = start + i;
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at;
                        break;
                    }
                }
                ',' if depth == 1 => {
                    if names_time(&code[item_start..at]) {
                        lines.push(line_of(code, item_start, &code[item_start..at]));
                    }
                    item_start = at + 1;
                }
                _ => {}
            }
        }
        let last = &code[item_start..end];
        if names_time(last) {
            lines.push(line_of(code, item_start, last));
        }
        from = end.max(start);
    }
    lines
}

/// Whether a group item is `time`, `time::…` or `time as …`.
fn names_time(item: &str) -> bool {
    let item = item.trim();
    item.strip_prefix("time").is_some_and(|rest| {
        rest.is_empty() || rest.starts_with("::") || rest.starts_with(char::is_whitespace)
    })
}

/// The 0-based line of the first non-blank character of `item`, which starts at `start`.
fn line_of(code: &str, start: usize, item: &str) -> usize {
    let leading = item.len() - item.trim_start().len();
    code[..start + leading].matches('\n').count()
}

/// Result of scanning the runtime's sources.
#[derive(Debug, Default)]
pub struct ClockScan {
    /// Files scanned (the port file excluded).
    pub files_scanned: usize,
    /// One message per clock use outside the port.
    pub violations: Vec<String>,
}

/// Runs [`check_source`] over every `*.rs` under [`RUNTIME_SRC`] except its [`PORT_FILE`].
pub fn check_clock_uses_in(root: &Path) -> anyhow::Result<ClockScan> {
    let src = root.join(RUNTIME_SRC);
    let mut scan = ClockScan::default();
    if !src.is_dir() {
        return Ok(scan);
    }
    let port = src.join(PORT_FILE);
    for file in rs_files(&src)? {
        if file == port {
            continue;
        }
        let contents = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let display = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        scan.files_scanned += 1;
        scan.violations.extend(check_source(&display, &contents));
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(violations: &[String], needles: &[&str]) {
        assert_eq!(
            violations.len(),
            1,
            "expected one violation: {violations:#?}"
        );
        for needle in needles {
            assert!(
                violations[0].contains(needle),
                "{:?} lacks {needle:?}",
                violations[0]
            );
        }
    }

    #[test]
    fn each_clock_api_is_caught() {
        let cases = [
            ("let t = std::time::Instant::now();", "Instant"),
            ("use std::time::{Duration, SystemTime};", "SystemTime"),
            ("tokio::time::sleep(d).await;", "tokio::time"),
            ("use tokio::time::timeout;", "tokio::time"),
            ("std::thread::sleep(d);", "std::thread::sleep"),
            ("thread::sleep(d);", "thread::sleep"),
            ("let d = tokio::time::Instant::now();", "Instant"),
        ];
        for (line, api) in cases {
            let source = format!("fn f() {{\n    {line}\n}}\n");
            one(
                &check_source("w.rs", &source),
                &["w.rs:2", api, "Clock port"],
            );
        }
    }

    #[test]
    fn grouped_tokio_imports_are_caught() {
        one(
            &check_source("g.rs", "use tokio::{sync::mpsc, time::sleep};\n"),
            &["g.rs:1", "tokio::{time}"],
        );
        one(
            &check_source("g.rs", "use tokio::{\n    select,\n    time,\n};\n"),
            &["g.rs:3"],
        );
        one(
            &check_source("g.rs", "use tokio::{sync::{mpsc, oneshot}, time as t};\n"),
            &["g.rs:1"],
        );
        // A nested `time` belongs to another module.
        assert!(check_source("g.rs", "use tokio::{sync::{time}, select};\n").is_empty());
    }

    #[test]
    fn comments_strings_lookalikes_and_the_port_pass() {
        let source = "\
//! Sleeps go through the clock, never tokio::time::sleep.
use std::time::Duration; // not Instant
/// Unlike `std::thread::sleep`, this waits on the clock.
fn f(clock: &dyn Clock) -> SleepFuture {
    let _ = \"tokio::time::sleep and SystemTime::now\";
    let _ = Instantiated::new();
    let _: Duration = Duration::from_millis(5);
    tokio::select! { () = clock.sleep(d) => {} }
    clock.sleep(Duration::ZERO)
}
";
        assert_eq!(check_source("c.rs", source), Vec::<String>::new());
    }

    #[test]
    fn test_modules_are_scanned_too() {
        let source = "\
fn real() {}

#[cfg(test)]
mod tests {
    fn waits() { std::thread::sleep(std::time::Duration::from_millis(2)); }
}
";
        one(
            &check_source("t.rs", source),
            &["t.rs:5", "std::thread::sleep"],
        );
    }

    #[test]
    fn a_reintroduction_is_found_in_the_tree_and_the_port_is_exempt() {
        let root =
            std::env::temp_dir().join(format!("tidy-clock-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join(RUNTIME_SRC);
        std::fs::create_dir_all(src.join("actor")).unwrap();
        std::fs::write(
            src.join(PORT_FILE),
            "pub fn now() -> std::time::SystemTime { std::time::SystemTime::now() }\n",
        )
        .unwrap();
        std::fs::write(
            src.join("writer.rs"),
            "async fn pause(clock: &dyn Clock) {\n    clock.sleep(P).await;\n}\n",
        )
        .unwrap();
        let clean = check_clock_uses_in(&root).unwrap();
        assert_eq!(clean.files_scanned, 1);
        assert_eq!(clean.violations, Vec::<String>::new());
        // Re-introduced in a nested module: found, with its path and line.
        std::fs::write(
            src.join("actor").join("perform.rs"),
            "async fn wait() {\n    tokio::time::sleep(P).await;\n}\n",
        )
        .unwrap();
        let dirty = check_clock_uses_in(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(dirty.files_scanned, 2);
        one(
            &dirty.violations,
            &[
                "crates/taskrunner-runtime/src/actor/perform.rs:2",
                "tokio::time",
            ],
        );
    }
}
