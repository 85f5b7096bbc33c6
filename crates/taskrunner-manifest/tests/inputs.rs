//! Input resolution (SPEC §1.1) and `--input` coercion (SPEC §8.1 rule 7).

mod common;

use serde_json::{Map, Value, json};
use taskrunner_manifest::{codes, coerce_cli_input, parse, resolve_inputs};

fn provided(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("object"),
    }
}

#[test]
fn defaults_and_provided_values() {
    let m = parse(common::VALID).unwrap_or_else(|d| panic!("{d}"));
    let resolved = resolve_inputs(&m, &provided(json!({"target": "prod", "replicas": 3.0})))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(resolved.get("target"), Some(&json!("prod")));
    // Integral floats are normalised to integers.
    assert_eq!(resolved.get("replicas"), Some(&json!(3)));
    assert_eq!(resolved.get("regions"), Some(&json!(["eu", "us"])));
}

#[test]
fn resolution_errors_point_at_inputs() {
    let m = parse(common::VALID).unwrap_or_else(|d| panic!("{d}"));
    let diags: Vec<_> = resolve_inputs(
        &m,
        &provided(json!({"replicas": 0, "regons": [], "regions": "eu"})),
    )
    .expect_err("errors")
    .into_iter()
    .map(|d| (d.code, d.path, d.message))
    .collect();
    assert_eq!(
        diags,
        vec![
            (
                codes::INPUT_UNDECLARED,
                "inputs.regons".to_owned(),
                "input 'regons' is not declared by the pack (did you mean 'regions'?)".to_owned()
            ),
            (
                codes::INPUT_REQUIRED,
                "inputs.target".to_owned(),
                "required input 'target' (string) was not provided and has no default".to_owned()
            ),
            (
                codes::INPUT_SCHEMA_MISMATCH,
                "inputs.replicas".to_owned(),
                "value 0 is less than the minimum of 1".to_owned()
            ),
            (
                codes::INPUT_TYPE_MISMATCH,
                "inputs.regions".to_owned(),
                "expected an array, found a string".to_owned()
            ),
        ]
    );
}

#[test]
fn integer_type_rejects_fractions_and_huge_values() {
    let m = parse(common::VALID).unwrap_or_else(|d| panic!("{d}"));
    for bad in [json!(2.5), json!("2"), json!(9_007_199_254_740_993_u64)] {
        let d = resolve_inputs(&m, &provided(json!({"target": "x", "replicas": bad})))
            .expect_err("type error");
        assert_eq!(
            d.iter().next().map(|d| d.code),
            Some(codes::INPUT_TYPE_MISMATCH)
        );
    }
}

#[test]
fn optional_input_without_default_is_omitted() {
    let yaml = common::VALID.replacen(
        "    - name: regions\n      type: array\n      default: [eu, us]\n",
        "    - name: regions\n      type: array\n",
        1,
    );
    let m = parse(&yaml).unwrap_or_else(|d| panic!("{d}"));
    let resolved =
        resolve_inputs(&m, &provided(json!({"target": "x"}))).unwrap_or_else(|d| panic!("{d}"));
    assert!(!resolved.contains_key("regions"));
}

#[test]
fn cli_values_are_coerced_to_the_declared_type() {
    let m = parse(common::VALID).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(coerce_cli_input(&m, "target", "123"), json!("123"));
    assert_eq!(coerce_cli_input(&m, "target", "\"q\""), json!("\"q\""));
    assert_eq!(coerce_cli_input(&m, "replicas", "3"), json!(3));
    assert_eq!(coerce_cli_input(&m, "replicas", "three"), json!("three"));
    assert_eq!(coerce_cli_input(&m, "regions", "[\"eu\"]"), json!(["eu"]));
    assert_eq!(coerce_cli_input(&m, "undeclared", "true"), json!(true));
    assert_eq!(coerce_cli_input(&m, "undeclared", "abc"), json!("abc"));
}

#[test]
fn quoting_does_not_change_values_of_the_same_type() {
    let plain = common::VALID;
    let quoted = common::VALID.replacen("name: Ops", "name: \"Ops\"", 1);
    let a = parse(plain).unwrap_or_else(|d| panic!("{d}"));
    let b = parse(&quoted).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(a.metadata(), b.metadata());
    let single = common::VALID.replacen("default: [eu, us]", "default: ['eu', \"us\"]", 1);
    let c = parse(&single).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(a.inputs(), c.inputs());
}
