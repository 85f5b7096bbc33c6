//! The tidy checks against the real workspace; they run on every `cargo test --workspace`.
//!
//! Each test also asserts it looked at something, so a wrong path cannot make it pass.

use xtask::tidy;

fn fail_if_any(check: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "tidy: {check} failed:\n{}",
        tidy::format_violations(violations)
    );
}

#[test]
fn dependency_edges_point_down() {
    let metadata =
        tidy::cargo_metadata(&xtask::workspace_root(), true).expect("cargo metadata --no-deps");
    let members = metadata["workspace_members"].as_array().map_or(0, Vec::len);
    assert!(members > 0, "cargo metadata listed no workspace members");
    fail_if_any("dependency edges", &tidy::check_dependency_edges(&metadata));
}

#[test]
fn pure_crates_have_no_io_in_normal_closure() {
    let metadata = tidy::cargo_metadata(&xtask::workspace_root(), false).expect("cargo metadata");
    assert!(
        metadata["resolve"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty()),
        "no resolve graph"
    );
    fail_if_any(
        "pure dependency closure",
        &tidy::check_pure_closure(&metadata),
    );
}

#[test]
fn pure_crates_use_no_banned_apis() {
    let root = xtask::workspace_root();
    let scan = tidy::check_banned_apis_in(&root).expect("scan pure crates");
    let present = tidy::PURE_CRATES
        .iter()
        .any(|c| root.join("crates").join(c).join("src").is_dir());
    assert!(
        !present || scan.files_scanned > 0,
        "pure crates exist but no source file was scanned"
    );
    fail_if_any("banned APIs in pure crates", &scan.violations);
}

#[test]
fn crates_inherit_lints_and_document_themselves() {
    fail_if_any(
        "crate hygiene",
        &tidy::check_hygiene_in(&xtask::workspace_root()).expect("hygiene"),
    );
}

#[test]
fn nothing_reads_a_path_outside_the_repository() {
    let scan = tidy::paths::check_outside_paths_in(&xtask::workspace_root()).expect("scan");
    assert!(
        scan.files_scanned > 100,
        "only {} files scanned: is the walk looking in the right place?",
        scan.files_scanned
    );
    fail_if_any("paths outside the repository", &scan.violations);
}

#[test]
fn the_runtime_reads_time_only_through_its_clock_port() {
    let scan = tidy::clock::check_clock_uses_in(&xtask::workspace_root()).expect("scan");
    assert!(
        scan.files_scanned > 10,
        "only {} runtime files scanned: is the walk looking in the right place?",
        scan.files_scanned
    );
    fail_if_any(
        "clock uses outside the runtime's Clock port",
        &scan.violations,
    );
}
