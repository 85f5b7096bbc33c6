//! Input resolution (SPEC §1.1) and `--input` coercion (SPEC §8.1 rule 7).

mod common;

use serde_json::{Map, Value, json};
use taskrunner_manifest::{codes, coerce_cli_input, parse, parse_value, resolve_inputs};

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

#[test]
fn huge_json_floats_are_not_integers() {
    let m = parse(common::VALID).unwrap_or_else(|d| panic!("{d}"));
    // What serde_json makes of `12345678901234567890123`, and a float far beyond 2^53.
    for bad in [
        json!(1.234_567_890_123_456_8e22),
        json!(1e300),
        json!(-9_007_199_254_740_994.0),
    ] {
        let d = resolve_inputs(&m, &provided(json!({"target": "x", "replicas": bad})))
            .expect_err("out of range");
        let d = d.iter().next().expect("one");
        assert_eq!(
            (d.code, d.path.as_str()),
            (codes::INPUT_TYPE_MISMATCH, "inputs.replicas")
        );
        assert!(
            d.message.contains("is outside the range ±2^53"),
            "{}",
            d.message
        );
    }
    // `number` inputs: an integral value beyond 2^53 cannot be told apart from its neighbours.
    let yaml = common::VALID.replacen(
        "    - name: regions\n      type: array\n",
        "    - name: ratio\n      type: number\n    - name: regions\n      type: array\n",
        1,
    );
    let m = parse(&yaml).unwrap_or_else(|d| panic!("{d}"));
    for bad in [
        json!(1e300),
        json!(9_007_199_254_740_993_u64),
        json!(-1.0e17),
    ] {
        let d = resolve_inputs(&m, &provided(json!({"target": "x", "ratio": bad})))
            .expect_err("out of range");
        assert_eq!(
            d.iter().next().map(|d| d.code),
            Some(codes::INPUT_TYPE_MISMATCH)
        );
    }
    for ok in [json!(0.5), json!(9_007_199_254_740_992.0), json!(1.5e-300)] {
        resolve_inputs(&m, &provided(json!({"target": "x", "ratio": ok})))
            .unwrap_or_else(|d| panic!("{d}"));
    }
}

#[test]
fn schema_failures_do_not_echo_huge_values() {
    let yaml = common::VALID.replacen(
        "      type: string\n      required: true\n",
        "      type: string\n      required: true\n      schema: {maxLength: 3}\n",
        1,
    );
    let m = parse(&yaml).unwrap_or_else(|d| panic!("{d}"));
    let long = "y".repeat(10_000);
    let d = resolve_inputs(&m, &provided(json!({"target": long}))).expect_err("too long");
    let d = d.iter().next().expect("one");
    assert_eq!(d.code, codes::INPUT_SCHEMA_MISMATCH);
    assert!(d.message.len() < 200, "{}", d.message);
    assert!(
        d.message.contains("… is longer than 3 characters"),
        "{}",
        d.message
    );
    // Undeclared names are shortened too.
    let name = "n".repeat(1000);
    let d = resolve_inputs(&m, &provided(json!({"target": "x", name: 1}))).expect_err("undeclared");
    assert!(d.iter().all(|d| d.message.len() < 200), "{d}");
}

#[test]
fn parse_value_reads_inputs_files_with_the_manifest_reader() {
    let v = parse_value(
        "a: yes\nb: on\nc: Off\nd: 010\ne: 0o10\nf: 1_000\ng: 0x1F\nh: true\ni: ~\nj: 1.5\nk: [1, \"2\"]\n",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        v,
        json!({"a": "yes", "b": "on", "c": "Off", "d": 10, "e": 8, "f": "1_000", "g": 31,
               "h": true, "i": null, "j": 1.5, "k": [1, "2"]})
    );
    // JSON is YAML.
    assert_eq!(
        parse_value(r#"{"target": "prod", "replicas": 3}"#).unwrap_or_else(|d| panic!("{d}")),
        json!({"target": "prod", "replicas": 3})
    );
    // Duplicate keys (compared as strings), huge integers and non-finite numbers: errors at
    // their paths, all of them.
    let d = parse_value("x: 1\n1: a\n\"1\": b\nx: 2\nbig: 12345678901234567890123\nn: [.inf]\n")
        .expect_err("errors");
    let got: Vec<_> = d
        .iter()
        .map(|d| (d.code, d.path.as_str(), d.line))
        .collect();
    assert_eq!(
        got,
        [
            (codes::DUPLICATE_KEY, "1", Some(3)),
            (codes::DUPLICATE_KEY, "x", Some(4)),
            (codes::OUT_OF_RANGE, "big", Some(5)),
            (codes::OUT_OF_RANGE, "n[0]", Some(6)),
        ],
        "{d}"
    );
    // Budgets: alias bombs and syntax errors.
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n";
    let d = parse_value(bomb).expect_err("bomb");
    assert_eq!(d.iter().next().map(|d| d.code), Some(codes::BUDGET));
    let d = parse_value("a: [1\n").expect_err("syntax");
    assert_eq!(d.iter().next().map(|d| d.code), Some(codes::YAML_SYNTAX));
}
