//! Tidy checks: the architecture rules of `docs/ARCHITECTURE.md`, enforced as ordinary tests.
//!
//! Every check is a pure function over data (metadata JSON, file contents) returning one
//! message per violation, so the self-tests below can feed it a violation and watch it fail.
//! Thin wrappers (`*_in`, [`cargo_metadata`]) read the real workspace; `xtask/tests/tidy.rs`
//! runs them on every `cargo test --workspace`.
//!
//! Escape hatch for the banned-API scan: a source line containing
//! `// tidy: allow(<api>) <reason>` (for example `// tidy: allow(HashMap) never iterated`)
//! is exempt from that one API. The reason is mandatory.

pub mod clock;
pub mod paths;
pub mod source;

pub use source::*;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

const SECRETS: &str = "taskrunner-secrets";
const EXPR: &str = "taskrunner-expr";
const MANIFEST: &str = "taskrunner-manifest";
const PLAN: &str = "taskrunner-plan";
const ENGINE: &str = "taskrunner-engine";
const STORE: &str = "taskrunner-store";
const STORE_SQLITE: &str = "taskrunner-store-sqlite";
const STORE_POSTGRES: &str = "taskrunner-store-postgres";
const EXEC: &str = "taskrunner-exec";
const EXEC_HTTP: &str = "taskrunner-exec-http";
const RUNTIME: &str = "taskrunner-runtime";
const HTTP: &str = "taskrunner-http";
const AUTH: &str = "taskrunner-auth";
const TESTKIT: &str = "taskrunner-testkit";
const EVIDENCE: &str = "taskrunner-evidence";

/// The pure crates (L0–L3): no I/O, clock, threads or `HashMap`.
pub const PURE_CRATES: &[&str] = &[SECRETS, EXPR, MANIFEST, PLAN, ENGINE, EVIDENCE];

/// For each workspace library crate, the workspace crates it may use as normal (and build)
/// dependencies: exactly the edges the crates need, no more, so a dependency that would let a
/// rule be checked in a second place (the store reading plans, exec parsing manifests) fails
/// here. Dev-dependencies may additionally use `taskrunner-testkit`, the crate itself and the
/// adapters of [`DEV_ADAPTERS`]. Packages under `bins/` may use every library except the
/// testkit; `xtask` uses none (it shells out).
/// A crate missing from this table fails the check: add it here when you create it.
pub const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    // The one masker: a leaf every crate that masks may use.
    (SECRETS, &[]),
    (EXPR, &[]),
    (MANIFEST, &[EXPR]),
    (PLAN, &[EXPR, MANIFEST]),
    // The engine never sees a Manifest, only a Plan.
    (ENGINE, &[EXPR, PLAN, SECRETS]),
    // Signed run evidence: recomputes the plan hash (plan) and the journal chain (engine); it
    // never defines either again.
    (EVIDENCE, &[PLAN, ENGINE]),
    // The store keeps opaque records: it depends on no other crate of ours.
    (STORE, &[]),
    // Storage adapters implement the store's ports and nothing else.
    (STORE_SQLITE, &[STORE]),
    (STORE_POSTGRES, &[STORE]),
    // Executors render `{{ }}` templates (expr); they know no manifest, plan or run.
    (EXEC, &[EXPR, SECRETS]),
    // `builtin:http`: outbound HTTP behind the executor port; kept apart so the HTTP client
    // stays out of everything but the binary.
    (EXEC_HTTP, &[EXEC, SECRETS]),
    // The runtime drives ports (store traits, executors); bins pick the storage adapters.
    // Admission works from the `Plan`: the runtime never sees a Manifest.
    (
        RUNTIME,
        &[EXPR, PLAN, ENGINE, STORE, EXEC, SECRETS, EVIDENCE],
    ),
    // Authentication knows nothing of runs: it maps credentials to scopes.
    (AUTH, &[]),
    // The HTTP facade talks to the runtime; plan/engine/store only for the types it renders.
    (HTTP, &[PLAN, ENGINE, STORE, RUNTIME, AUTH, EVIDENCE]),
    // Scripted scenarios over the engine; `ManualClock` implements the runtime's clock port.
    (TESTKIT, &[PLAN, ENGINE, RUNTIME]),
];

/// Adapters that any crate's tests may use (they run against real stores and executors).
const DEV_ADAPTERS: &[&str] = &[STORE_SQLITE, STORE_POSTGRES, EXEC, EXEC_HTTP];

/// Crates that must not appear in a pure crate's normal dependency closure, and why.
pub const BANNED_IN_PURE_CLOSURE: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("async-std", "async runtime"),
    ("smol", "async runtime"),
    ("futures-executor", "async runtime"),
    ("async-executor", "async runtime"),
    ("mio", "socket I/O"),
    ("rusqlite", "database driver"),
    ("sqlx", "database driver"),
    ("postgres", "database driver"),
    ("tokio-postgres", "database driver"),
    ("axum", "HTTP framework"),
    ("hyper", "HTTP stack"),
    ("reqwest", "HTTP client"),
    ("ureq", "HTTP client"),
];

/// Crates only `bins/` and `xtask` may depend on (libraries have one thiserror `Error` enum).
const BIN_ONLY_CRATES: &[&str] = &["anyhow", "clap"];

/// APIs banned in the sources of the pure crates, and why.
pub const BANNED_APIS: &[(&str, &str)] = &[
    (
        "tokio",
        "async runtime; the pure core is sans-I/O, the runtime drives it",
    ),
    (
        "std::fs",
        "file I/O belongs to bins and adapters; take contents as input",
    ),
    (
        "std::net",
        "network I/O belongs to taskrunner-http, bins and adapters",
    ),
    (
        "std::env",
        "the environment is an input; the caller passes values in",
    ),
    ("std::process", "processes belong to taskrunner-exec"),
    ("std::thread", "threads belong to taskrunner-runtime"),
    (
        "Instant::now",
        "time is an input; take `now` as a parameter",
    ),
    (
        "SystemTime::now",
        "time is an input; take `now` as a parameter",
    ),
    (
        "HashMap",
        "iteration order is not deterministic; use BTreeMap or IndexMap",
    ),
    (
        "HashSet",
        "iteration order is not deterministic; use BTreeSet or IndexSet",
    ),
    (
        "thread_local",
        "a per-thread side channel hides an input; pass it as a parameter or a DeserializeSeed",
    ),
    (
        "RefCell",
        "interior mutability is a side channel in a pure function; return values instead",
    ),
];

// ---------------------------------------------------------------------------------------------
// Dependency edges
// ---------------------------------------------------------------------------------------------

/// Where a workspace package sits in the layer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Library,
    Bin,
    Xtask,
}

/// Checks every workspace package's declared dependencies on other workspace crates against
/// [`ALLOWED_EDGES`], and that only bins and xtask use anyhow/clap.
///
/// `metadata` is `cargo metadata --format-version 1` output, with or without `--no-deps`
/// (only `workspace_members` are checked).
pub fn check_dependency_edges(metadata: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    let members = match workspace_packages(metadata) {
        Ok(members) => members,
        Err(message) => return vec![message],
    };
    let root = metadata["workspace_root"].as_str().unwrap_or("");
    let workspace_names: BTreeSet<&str> =
        members.iter().filter_map(|p| p["name"].as_str()).collect();
    let table: BTreeMap<&str, &[&str]> = ALLOWED_EDGES.iter().copied().collect();
    let libraries_for_bins: Vec<&str> = ALLOWED_EDGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != TESTKIT)
        .collect();

    for package in &members {
        let name = package["name"].as_str().unwrap_or("?");
        let role = role_of(package, root);
        let allowed: &[&str] = match role {
            Role::Xtask => &[],
            Role::Bin => &libraries_for_bins,
            Role::Library => match table.get(name) {
                Some(allowed) => allowed,
                None => {
                    violations.push(format!(
                        "{name}: workspace crate missing from the layer table \
                         (add it to ALLOWED_EDGES in xtask/src/tidy.rs)"
                    ));
                    continue;
                }
            },
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or("?");
            let kind = dep["kind"].as_str(); // None = normal, "dev", "build"
            let is_dev = kind == Some("dev");
            let kind_label = kind.map_or(String::new(), |k| format!(" ({k})"));
            if role == Role::Library && !is_dev && BIN_ONLY_CRATES.contains(&dep_name) {
                violations.push(format!(
                    "{name} -> {dep_name}{kind_label}: only bins/ and xtask may depend on \
                     anyhow/clap (libraries define one thiserror Error enum)"
                ));
            }
            if !workspace_names.contains(dep_name) {
                continue;
            }
            // Tests may also use the testkit, the crate itself (to turn on a test-only
            // feature such as the store conformance suite) and the real adapters.
            let dev_ok = is_dev
                && (dep_name == TESTKIT || dep_name == name || DEV_ADAPTERS.contains(&dep_name));
            let ok = allowed.contains(&dep_name) || dev_ok;
            if !ok {
                let rule = edge_rule(name, role, dep_name, is_dev, &members, root);
                violations.push(format!("{name} -> {dep_name}{kind_label}: {rule}"));
            }
        }
    }
    violations
}

/// The most specific rule a forbidden edge breaks, for the failure message.
fn edge_rule(
    from: &str,
    role: Role,
    to: &str,
    is_dev: bool,
    members: &[&Value],
    root: &str,
) -> &'static str {
    let to_role = members
        .iter()
        .find(|p| p["name"].as_str() == Some(to))
        .map_or(Role::Library, |p| role_of(p, root));
    if to_role == Role::Bin {
        "nothing depends on bins"
    } else if to_role == Role::Xtask {
        "nothing depends on xtask"
    } else if to == TESTKIT && !is_dev {
        "taskrunner-testkit is dev-only (use it under [dev-dependencies])"
    } else if role == Role::Xtask {
        "xtask shells out to cargo; it does not link workspace crates"
    } else if from == ENGINE && to == MANIFEST {
        "the engine never sees a Manifest, only a Plan"
    } else if from == STORE {
        "the store keeps opaque records and depends on no other crate of ours"
    } else if from == STORE_SQLITE || from == STORE_POSTGRES {
        "storage adapters depend on the store only"
    } else if from == EXEC {
        "executors depend on expr only (they know no manifest, plan or run)"
    } else if PURE_CRATES.contains(&from) {
        "pure crates may only depend on pure crates below them"
    } else {
        "dependencies point down only (see ALLOWED_EDGES in xtask/src/tidy.rs)"
    }
}

fn role_of(package: &Value, root: &str) -> Role {
    let manifest = package["manifest_path"].as_str().unwrap_or("");
    let relative = manifest
        .strip_prefix(root)
        .unwrap_or(manifest)
        .trim_start_matches(['/', '\\']);
    if relative.starts_with("bins/") || relative.starts_with("bins\\") {
        Role::Bin
    } else if package["name"].as_str() == Some("xtask") {
        Role::Xtask
    } else {
        Role::Library
    }
}

/// The `packages` entries listed in `workspace_members`.
fn workspace_packages(metadata: &Value) -> Result<Vec<&Value>, String> {
    let Some(packages) = metadata["packages"].as_array() else {
        return Err("cargo metadata output has no `packages` array".to_owned());
    };
    let Some(member_ids) = metadata["workspace_members"].as_array() else {
        return Err("cargo metadata output has no `workspace_members` array".to_owned());
    };
    let member_ids: BTreeSet<&str> = member_ids.iter().filter_map(Value::as_str).collect();
    Ok(packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| member_ids.contains(id)))
        .collect())
}

/// Walks the resolved graph (normal edges only: `dep_kinds[].kind == null`) from every pure
/// crate present and reports any crate of [`BANNED_IN_PURE_CLOSURE`] it reaches, with the path.
///
/// `metadata` is full `cargo metadata --format-version 1` output (with `resolve`).
pub fn check_pure_closure(metadata: &Value) -> Vec<String> {
    let Some(nodes) = metadata["resolve"]["nodes"].as_array() else {
        return vec![
            "cargo metadata output has no `resolve.nodes` (was it run with --no-deps?)".to_owned(),
        ];
    };
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let name_of = |id| lookup_name(&names, id);
    let normal_deps: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|node| {
            let id = node["id"].as_str()?;
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k["kind"].is_null())
                })
                .filter_map(|dep| dep["pkg"].as_str())
                .collect();
            Some((id, deps))
        })
        .collect();
    let members = match workspace_packages(metadata) {
        Ok(members) => members,
        Err(message) => return vec![message],
    };

    let mut violations = Vec::new();
    for root in members
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| PURE_CRATES.contains(&n)))
    {
        let Some(root_id) = root["id"].as_str() else {
            continue;
        };
        // Breadth-first, remembering each crate's parent so the message can show the path.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([root_id]);
        let mut seen = BTreeSet::from([root_id]);
        while let Some(id) = queue.pop_front() {
            if let Some((banned, why)) = BANNED_IN_PURE_CLOSURE
                .iter()
                .find(|(n, _)| *n == name_of(id))
            {
                let mut path = vec![name_of(id)];
                let mut cursor = id;
                while let Some(&up) = parent.get(cursor) {
                    path.push(name_of(up));
                    cursor = up;
                }
                path.reverse();
                violations.push(format!(
                    "{}: pure crate pulls in {banned} ({why}) through {}",
                    name_of(root_id),
                    path.join(" -> ")
                ));
                continue; // report the banned crate, not everything behind it
            }
            for &dep in normal_deps.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    parent.insert(dep, id);
                    queue.push_back(dep);
                }
            }
        }
    }
    violations
}

fn lookup_name<'a>(names: &BTreeMap<&'a str, &'a str>, id: &'a str) -> &'a str {
    names.get(id).copied().unwrap_or(id)
}

/// Runs `cargo metadata --format-version 1` (plus `--no-deps` if asked) in `root`.
pub fn cargo_metadata(root: &Path, no_deps: bool) -> anyhow::Result<Value> {
    let mut command = Command::new(crate::cargo());
    command
        .current_dir(root)
        .args(["metadata", "--format-version", "1"]);
    if no_deps {
        command.arg("--no-deps");
    }
    let output = command.output().context("failed to run `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("`cargo metadata` printed invalid JSON")
}

// ---------------------------------------------------------------------------------------------
// Crate hygiene
// ---------------------------------------------------------------------------------------------

/// Checks that a crate's `Cargo.toml` inherits the workspace lints (`[lints] workspace = true`).
pub fn check_inherits_lints(display: &str, cargo_toml: &str) -> Vec<String> {
    let mut in_lints = false;
    for line in cargo_toml.lines() {
        let compact: String = line
            .split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if compact.starts_with('[') {
            in_lints = compact == "[lints]";
        } else if (in_lints && compact == "workspace=true")
            || compact == "lints.workspace=true"
            || compact == "lints={workspace=true}"
        {
            return Vec::new();
        }
    }
    vec![format!(
        "{display}: missing `[lints] workspace = true` (every crate inherits the workspace lints)"
    )]
}

/// Checks that a crate root starts with a `//!` doc comment saying what the crate owns.
pub fn check_crate_doc(display: &str, crate_root: &str) -> Vec<String> {
    match crate_root.lines().find(|line| !line.trim().is_empty()) {
        Some(first) if first.trim_start().starts_with("//!") => Vec::new(),
        _ => vec![format!(
            "{display}: must start with a `//!` doc comment saying what the crate owns"
        )],
    }
}

/// Runs the hygiene checks on every directory under `crates/` (and on `xtask/`).
pub fn check_hygiene_in(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let crates = root.join("crates");
    if crates.is_dir() {
        for entry in std::fs::read_dir(&crates).context("listing crates/")? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    dirs.push(root.join("xtask"));
    for dir in dirs {
        let display = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
        match std::fs::read_to_string(dir.join("Cargo.toml")) {
            Ok(text) => violations.extend(check_inherits_lints(
                &format!("{display}/Cargo.toml"),
                &text,
            )),
            Err(_) => violations.push(format!("{display}: no Cargo.toml")),
        }
        let crate_root = "src/lib.rs";
        match std::fs::read_to_string(dir.join(crate_root)) {
            Ok(text) => {
                violations.extend(check_crate_doc(&format!("{display}/{crate_root}"), &text))
            }
            Err(_) => violations.push(format!(
                "{display}: no {crate_root} (crates/ holds libraries; binaries live in bins/)"
            )),
        }
    }
    Ok(violations)
}

// ---------------------------------------------------------------------------------------------
// All checks
// ---------------------------------------------------------------------------------------------

/// Runs every tidy check against the workspace at `root`; returns (check name, violations).
pub fn run_all(root: &Path) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let no_deps = cargo_metadata(root, true)?;
    let full = cargo_metadata(root, false)?;
    Ok(vec![
        ("dependency edges", check_dependency_edges(&no_deps)),
        ("pure dependency closure", check_pure_closure(&full)),
        (
            "banned APIs in pure crates",
            check_banned_apis_in(root)?.violations,
        ),
        ("crate hygiene", check_hygiene_in(root)?),
        (
            "paths outside the repository",
            paths::check_outside_paths_in(root)?.violations,
        ),
        (
            "clock uses outside the runtime's Clock port",
            clock::check_clock_uses_in(root)?.violations,
        ),
    ])
}

/// Formats violations as an indented list, for test failure messages.
pub fn format_violations(violations: &[String]) -> String {
    let mut text = String::new();
    for violation in violations {
        let _ = writeln!(text, "  {violation}");
    }
    text
}

#[cfg(test)]
mod tests {
    //! Self-tests: each checker is fed a violation and must report it (and a clean input and
    //! must not), so the workspace tests in `xtask/tests/tidy.rs` cannot pass vacuously.

    use super::*;
    use serde_json::json;

    // --- fake `cargo metadata` -------------------------------------------------------------

    /// A workspace package at `/ws/<dir>` with `(dependency, kind)` pairs.
    fn package(name: &str, dir: &str, deps: &[(&str, Option<&str>)]) -> Value {
        let dependencies: Vec<Value> = deps
            .iter()
            .map(|(dep, kind)| json!({ "name": dep, "kind": kind, "req": "*" }))
            .collect();
        json!({
            "name": name,
            "id": format!("path+file:///ws/{dir}#{name}@0.1.0"),
            "manifest_path": format!("/ws/{dir}/Cargo.toml"),
            "dependencies": dependencies,
        })
    }

    fn metadata(packages: Vec<Value>) -> Value {
        let members: Vec<Value> = packages.iter().map(|p| p["id"].clone()).collect();
        json!({ "packages": packages, "workspace_members": members, "workspace_root": "/ws" })
    }

    fn clean_workspace() -> Vec<Value> {
        vec![
            package(
                EXPR,
                "crates/taskrunner-expr",
                &[("serde_json", None), ("proptest", Some("dev"))],
            ),
            package(
                MANIFEST,
                "crates/taskrunner-manifest",
                &[(EXPR, None), ("thiserror", None)],
            ),
            package(
                PLAN,
                "crates/taskrunner-plan",
                &[(EXPR, None), (MANIFEST, None)],
            ),
            package(
                ENGINE,
                "crates/taskrunner-engine",
                &[(PLAN, None), (TESTKIT, Some("dev"))],
            ),
            package(TESTKIT, "crates/taskrunner-testkit", &[(ENGINE, None)]),
            package(
                "taskrunner",
                "bins/taskrunner",
                &[(PLAN, None), ("anyhow", None), ("clap", None)],
            ),
            package("xtask", "xtask", &[("anyhow", None), ("serde_json", None)]),
        ]
    }

    fn assert_one_violation(violations: &[String], needles: &[&str]) {
        assert_eq!(
            violations.len(),
            1,
            "expected one violation, got {violations:#?}"
        );
        for needle in needles {
            assert!(
                violations[0].contains(needle),
                "{:?} should mention {needle:?}",
                violations[0]
            );
        }
    }

    #[test]
    fn edges_clean_workspace_passes() {
        assert_eq!(
            check_dependency_edges(&metadata(clean_workspace())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn edges_engine_to_manifest_fails() {
        let mut packages = clean_workspace();
        packages[3] = package(
            ENGINE,
            "crates/taskrunner-engine",
            &[(PLAN, None), (MANIFEST, None)],
        );
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &[
                "taskrunner-engine -> taskrunner-manifest",
                "never sees a Manifest",
            ],
        );
    }

    #[test]
    fn edges_upward_dependency_in_pure_crate_fails() {
        let mut packages = clean_workspace();
        packages[0] = package(EXPR, "crates/taskrunner-expr", &[(PLAN, Some("build"))]);
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &[
                "taskrunner-expr -> taskrunner-plan (build)",
                "pure crates may only depend",
            ],
        );
    }

    #[test]
    fn edges_dependency_on_bin_fails() {
        let mut packages = clean_workspace();
        packages[2] = package(
            PLAN,
            "crates/taskrunner-plan",
            &[(EXPR, None), ("taskrunner", Some("dev"))],
        );
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &[
                "taskrunner-plan -> taskrunner (dev)",
                "nothing depends on bins",
            ],
        );
    }

    #[test]
    fn edges_testkit_as_normal_dependency_fails() {
        let mut packages = clean_workspace();
        packages[3] = package(
            ENGINE,
            "crates/taskrunner-engine",
            &[(PLAN, None), (TESTKIT, None)],
        );
        assert_one_violation(&check_dependency_edges(&metadata(packages)), &["dev-only"]);
    }

    #[test]
    fn edges_anyhow_in_library_fails() {
        let mut packages = clean_workspace();
        packages[1] = package(
            MANIFEST,
            "crates/taskrunner-manifest",
            &[(EXPR, None), ("anyhow", None)],
        );
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &["taskrunner-manifest -> anyhow"],
        );
    }

    /// The clean workspace plus the ports-and-adapters crates with their real edges.
    fn full_workspace() -> Vec<Value> {
        let mut packages = clean_workspace();
        packages.extend([
            package(STORE, "crates/taskrunner-store", &[(STORE, Some("dev"))]),
            package(
                STORE_SQLITE,
                "crates/taskrunner-store-sqlite",
                &[(STORE, None), (STORE, Some("dev")), (TESTKIT, Some("dev"))],
            ),
            package(EXEC, "crates/taskrunner-exec", &[(EXPR, None)]),
            package(
                HTTP,
                "crates/taskrunner-http",
                &[
                    (PLAN, None),
                    (ENGINE, None),
                    (STORE, None),
                    (RUNTIME, None),
                    (AUTH, None),
                    (EXEC, Some("dev")),
                ],
            ),
        ]);
        packages
    }

    /// `full_workspace` with `name`'s dependencies replaced.
    fn with_deps(name: &str, deps: &[(&str, Option<&str>)]) -> Vec<Value> {
        full_workspace()
            .into_iter()
            .map(|p| {
                if p["name"] == name {
                    let dir = p["manifest_path"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("/ws/")
                        .trim_end_matches("/Cargo.toml")
                        .to_owned();
                    package(name, &dir, deps)
                } else {
                    p
                }
            })
            .collect()
    }

    #[test]
    fn edges_real_graph_passes_even_with_transitive_duplicates() {
        assert_eq!(
            check_dependency_edges(&metadata(full_workspace())),
            Vec::<String>::new()
        );
        // http -> plan is also reachable through the runtime: listing both is fine.
        assert!(
            ALLOWED_EDGES
                .iter()
                .any(|(from, to)| *from == HTTP && to.contains(&PLAN))
        );
    }

    #[test]
    fn edges_store_to_engine_fails() {
        // The store once listed expr, manifest, plan and engine; it reads none of them.
        let packages = with_deps(STORE, &[(ENGINE, None)]);
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &[
                "taskrunner-store -> taskrunner-engine",
                "depends on no other crate of ours",
            ],
        );
        for upper in [EXPR, MANIFEST, PLAN] {
            let packages = with_deps(STORE, &[(upper, None)]);
            assert_one_violation(
                &check_dependency_edges(&metadata(packages)),
                &[&format!("taskrunner-store -> {upper}")],
            );
        }
    }

    #[test]
    fn edges_adapter_and_executor_duplicates_fail() {
        let packages = with_deps(STORE_SQLITE, &[(STORE, None), (PLAN, None)]);
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &["taskrunner-store-sqlite -> taskrunner-plan", "store only"],
        );
        let packages = with_deps(EXEC, &[(EXPR, None), (MANIFEST, None)]);
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &["taskrunner-exec -> taskrunner-manifest", "expr only"],
        );
        let packages = with_deps(HTTP, &[(PLAN, None), (RUNTIME, None), (MANIFEST, None)]);
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &["taskrunner-http -> taskrunner-manifest"],
        );
    }

    #[test]
    fn edges_table_points_down() {
        // No crate may reach itself through the table: the layers form a DAG.
        let table: BTreeMap<&str, &[&str]> = ALLOWED_EDGES.iter().copied().collect();
        for (start, _) in ALLOWED_EDGES {
            let mut stack: Vec<&str> = table[start].to_vec();
            let mut seen = BTreeSet::new();
            while let Some(next) = stack.pop() {
                assert_ne!(next, *start, "{start} reaches itself through ALLOWED_EDGES");
                if seen.insert(next) {
                    stack.extend(table.get(next).copied().unwrap_or(&[]));
                }
            }
        }
    }

    #[test]
    fn edges_crate_missing_from_table_fails() {
        let mut packages = clean_workspace();
        packages.push(package(
            "taskrunner-mystery",
            "crates/taskrunner-mystery",
            &[],
        ));
        assert_one_violation(
            &check_dependency_edges(&metadata(packages)),
            &["taskrunner-mystery", "layer table"],
        );
    }

    #[test]
    fn edges_malformed_metadata_fails() {
        assert_eq!(check_dependency_edges(&json!({})).len(), 1);
    }

    // --- fake resolve graph ----------------------------------------------------------------

    /// Full metadata: `edges` are (from, to, kind) between package names.
    fn resolved(members: &[&str], others: &[&str], edges: &[(&str, &str, Option<&str>)]) -> Value {
        let id = |name: &str| format!("id-{name}");
        let packages: Vec<Value> = members
            .iter()
            .chain(others)
            .map(|n| json!({ "name": n, "id": id(n) }))
            .collect();
        let nodes: Vec<Value> = members
            .iter()
            .chain(others)
            .map(|n| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, _, _)| from == n)
                    .map(|(_, to, kind)| json!({ "pkg": id(to), "dep_kinds": [{ "kind": kind }] }))
                    .collect();
                json!({ "id": id(n), "deps": deps })
            })
            .collect();
        let member_ids: Vec<String> = members.iter().map(|n| id(n)).collect();
        json!({ "packages": packages, "workspace_members": member_ids, "resolve": { "nodes": nodes } })
    }

    #[test]
    fn closure_transitive_tokio_fails() {
        let meta = resolved(
            &[EXPR, PLAN],
            &["serde_json", "helper", "tokio"],
            &[
                (PLAN, EXPR, None),
                (EXPR, "serde_json", None),
                (PLAN, "helper", None),
                ("helper", "tokio", None),
            ],
        );
        assert_one_violation(
            &check_pure_closure(&meta),
            &[
                "taskrunner-plan",
                "tokio",
                "taskrunner-plan -> helper -> tokio",
            ],
        );
    }

    #[test]
    fn closure_ignores_dev_and_build_edges_and_impure_crates() {
        let meta = resolved(
            &[PLAN, RUNTIME],
            &["insta", "tokio", "cc"],
            &[
                (PLAN, "insta", Some("dev")),
                ("insta", "tokio", None),
                (PLAN, "cc", Some("build")),
                ("cc", "tokio", None),
                (RUNTIME, "tokio", None),
            ],
        );
        assert_eq!(check_pure_closure(&meta), Vec::<String>::new());
    }

    #[test]
    fn closure_without_resolve_fails() {
        assert_eq!(check_pure_closure(&metadata(clean_workspace())).len(), 1);
    }

    // --- banned APIs -----------------------------------------------------------------------

    fn hits(source: &str) -> Vec<String> {
        scan_source("f.rs", source).violations
    }

    #[test]
    fn api_use_std_fs_fails() {
        assert_one_violation(
            &hits("use std::fs;\n"),
            &["f.rs:1: banned API std::fs in pure crate ("],
        );
    }

    #[test]
    fn api_each_banned_api_is_caught() {
        for (api, _) in BANNED_APIS {
            let source = format!("fn f() {{\n    let _ = {api}::whatever;\n}}\n");
            assert_one_violation(&hits(&source), &[&format!("f.rs:2: banned API {api} ")]);
        }
    }

    #[test]
    fn api_side_channels_fail() {
        // The shape the YAML reader used before it took its source as a parameter.
        let source = "use std::cell::RefCell;\n\
                      thread_local! {\n    \
                      static SOURCE: RefCell<Option<String>> = const { RefCell::new(None) };\n}\n";
        let found = hits(source);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("f.rs:1: banned API RefCell"));
        assert!(found[1].starts_with("f.rs:2: banned API thread_local"));
        assert!(found[1].contains("side channel"));
        assert!(found[2].starts_with("f.rs:3: banned API RefCell"));
        // Look-alikes pass.
        assert_eq!(
            hits("let c = MyRefCell::new(); let t = thread_local_count;\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn api_grouped_imports_fail() {
        assert_one_violation(
            &hits("use std::{io, fs::File};\n"),
            &["f.rs:1: banned API std::fs"],
        );
        assert_one_violation(
            &hits("use ::std :: { sync::{Arc, Mutex},\n  env,\n};\n"),
            &["f.rs:2: banned API std::env"],
        );
        assert_one_violation(
            &hits("pub(crate) use std::{\n    io,\n    process as p,\n};\n"),
            &["f.rs:3: banned API std::process"],
        );
        assert_eq!(
            hits("use std::{fmt, io::{self, Write}, collections::BTreeMap};\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn api_qualified_and_instant_forms_fail() {
        assert_one_violation(
            &hits("let t = std::time::Instant::now();\n"),
            &["Instant::now"],
        );
        assert_one_violation(
            &hits("#[tokio::main]\nasync fn main() {}\n"),
            &["f.rs:1: banned API tokio"],
        );
        assert_one_violation(
            &hits("let m: std::collections::HashMap<u8, u8> = x;"),
            &["HashMap"],
        );
    }

    #[test]
    fn api_comments_strings_and_lookalikes_pass() {
        let source = r##"//! We never use std::fs here.
/// Unlike HashMap, a BTreeMap iterates in order.
// tokio would be wrong here
/* std::net
   HashSet */
let message = "std::env is banned; so is HashMap";
let raw = r#"Instant::now "quoted" HashSet"#;
let c = '"'; let d = '\''; let e = "\"std::fs\"";
fn f<'a>(x: &'a str) -> &'a str { x } // HashMap
let ok = MyInstant::now(); let also_ok = my_tokio::run(); let m = BTreeMap::new();
let h = HashMapLike::default();
"##;
        assert_eq!(hits(source), Vec::<String>::new());
    }

    #[test]
    fn api_code_after_string_with_comment_marker_fails() {
        assert_one_violation(
            &hits("let url = \"http://x\"; let m = HashMap::new();\n"),
            &["f.rs:1: banned API HashMap"],
        );
    }

    #[test]
    fn api_allow_escape_hatch() {
        assert_eq!(
            hits(
                "use std::collections::HashMap; // tidy: allow(HashMap) lookup only, never iterated\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            hits("let x = std::env::var(\"A\"); // tidy: allow(tokio, std::env) example\n"),
            Vec::<String>::new()
        );
        // A different API in the allow list does not exempt this one.
        assert_one_violation(
            &hits("use std::fs; // tidy: allow(HashMap) wrong api\n"),
            &["banned API std::fs"],
        );
        // The reason is mandatory.
        assert_one_violation(
            &hits("use std::fs; // tidy: allow(std::fs)\n"),
            &["needs a reason"],
        );
    }

    #[test]
    fn api_cfg_test_modules_are_skipped() {
        let source = "\
fn real() {}

#[cfg(test)]
mod tests {
    use std::fs;
    fn nested() { if true { let _ = std::env::var(\"X\"); } }
}

fn after() { let _ = std::thread::spawn(|| ()); }

#[cfg(test)]
#[path = \"other_tests.rs\"]
pub(crate) mod more_tests;
#[cfg(test)] mod inline { use tokio; }
";
        let scan = scan_source("f.rs", source);
        assert_one_violation(&scan.violations, &["f.rs:9: banned API std::thread"]);
        assert_eq!(scan.test_modules, vec!["more_tests".to_owned()]);
    }

    #[test]
    fn api_cfg_test_on_non_module_item_is_still_scanned() {
        assert_one_violation(
            &hits("#[cfg(test)]\nfn helper() { let _ = std::fs::read(\"x\"); }\n"),
            &["f.rs:2"],
        );
    }

    // --- hygiene ---------------------------------------------------------------------------

    #[test]
    fn hygiene_lints_inheritance() {
        assert_eq!(
            check_inherits_lints(
                "C",
                "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            check_inherits_lints("C", "[package]\nlints.workspace = true\n"),
            Vec::<String>::new()
        );
        assert_one_violation(
            &check_inherits_lints("C", "[package]\nname = \"a\"\n"),
            &["C: missing"],
        );
        // `workspace = true` in another table does not count.
        assert_one_violation(
            &check_inherits_lints("C", "[dependencies]\nworkspace = true\n[lints]\n"),
            &["C: missing"],
        );
    }

    #[test]
    fn hygiene_crate_doc() {
        assert_eq!(
            check_crate_doc("lib.rs", "\n//! Owns things.\n"),
            Vec::<String>::new()
        );
        assert_one_violation(
            &check_crate_doc("lib.rs", "/// item doc\npub fn f() {}\n"),
            &["lib.rs: must start"],
        );
        assert_one_violation(&check_crate_doc("lib.rs", ""), &["lib.rs"]);
    }
}
