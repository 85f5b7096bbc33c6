//! `Expression::references`: the root field chains an expression reads.

use std::collections::BTreeSet;

use taskrunner_expr::{Expression, References};

fn refs(src: &str) -> References {
    Expression::parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .references()
}

fn paths(list: &[&[&str]]) -> BTreeSet<Vec<String>> {
    list.iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[track_caller]
fn check(src: &str, expected: &[&[&str]], whole_root: bool) {
    let r = refs(src);
    assert_eq!(r.paths, paths(expected), "paths of {src}");
    assert_eq!(r.whole_root, whole_root, "whole_root of {src}");
}

#[test]
fn field_chains() {
    check("inputs.target", &[&["inputs", "target"]], false);
    check(
        "steps.\"write-report\".outputs.x",
        &[&["steps", "write-report", "outputs", "x"]],
        false,
    );
    check(
        "steps.build.outputs[0].x",
        &[&["steps", "build", "outputs"]],
        false,
    );
    check("inputs", &[&["inputs"]], false);
}

#[test]
fn operators_and_functions() {
    check(
        "length(inputs.xs) > `2` && run.id",
        &[&["inputs", "xs"], &["run", "id"]],
        false,
    );
    check(
        "inputs.a || inputs.b",
        &[&["inputs", "a"], &["inputs", "b"]],
        false,
    );
    check("!inputs.flag", &[&["inputs", "flag"]], false);
    check("join(',', inputs.names)", &[&["inputs", "names"]], false);
}

#[test]
fn projections_read_only_their_base() {
    check("inputs.xs[*].name", &[&["inputs", "xs"]], false);
    check("inputs.xs[].name", &[&["inputs", "xs"]], false);
    check("inputs.m.*.name", &[&["inputs", "m"]], false);
    check("inputs.xs[1:].name", &[&["inputs", "xs"]], false);
    check("inputs.xs[?x == inputs.y]", &[&["inputs", "xs"]], false);
    check("map(&foo, inputs.xs)", &[&["inputs", "xs"]], false);
    check(
        "sort_by(steps.list, &inputs.weight)",
        &[&["steps", "list"]],
        false,
    );
}

#[test]
fn pipes_read_from_the_left_result() {
    check("inputs | target", &[&["inputs", "target"]], false);
    check("inputs.xs | [0]", &[&["inputs", "xs"]], false);
    check("length(inputs.xs) | foo", &[&["inputs", "xs"]], false);
    check("inputs | keys(@)", &[&["inputs"]], false);
}

#[test]
fn multiselects() {
    check(
        "{x: inputs.a, y: steps.b.status}",
        &[&["inputs", "a"], &["steps", "b", "status"]],
        false,
    );
    check(
        "[inputs.a, run.id]",
        &[&["inputs", "a"], &["run", "id"]],
        false,
    );
    check(
        "inputs.{a: a, b: b.c}",
        &[&["inputs", "a"], &["inputs", "b", "c"]],
        false,
    );
}

#[test]
fn whole_root_uses() {
    check("@", &[], true);
    check("*", &[], true);
    check("*.foo", &[], true);
    check("keys(@)", &[], true);
    check("[0]", &[], true);
    check("[*].a", &[], true);
    check("to_string(@)", &[], true);
    check("@.inputs", &[&["inputs"]], false);
    check("@.inputs.x || @", &[&["inputs", "x"]], true);
}

#[test]
fn literals_read_nothing() {
    check("`{\"a\": 1}`", &[], false);
    check("'text'", &[], false);
    check("`1` == `2`", &[], false);
}

#[test]
fn roots_lists_first_segments() {
    let r = refs("{a: inputs.x, b: inputs.y, c: steps.s.outputs.o}");
    assert_eq!(r.roots(), BTreeSet::from(["inputs", "steps"]));
}
