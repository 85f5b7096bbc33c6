//! Runs the official JMESPath compliance suite (vendored in `fixtures/jmespath-compliance/`, see
//! its README for origin and licence) against the implementation: every case with a `result` or
//! an `error`.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use taskrunner_expr::{EvalError, Expression, ParseError};

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/jmespath-compliance")
}

/// JSON equality with numbers compared numerically (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
                p == q
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The suite's error kind for a parse error (arity and unknown functions are detected at
/// parse time; their messages say so).
fn parse_error_kind(e: &ParseError) -> &'static str {
    if e.message.starts_with("unknown function") {
        "unknown-function"
    } else if e.message.starts_with("wrong number of arguments") {
        "invalid-arity"
    } else {
        "syntax"
    }
}

fn eval_error_kind(e: &EvalError) -> &'static str {
    match e {
        EvalError::InvalidType(_) => "invalid-type",
        EvalError::InvalidArity(_) => "invalid-arity",
        EvalError::InvalidValue(_) => "invalid-value",
        EvalError::UnknownFunction(_) => "unknown-function",
        _ => "limit",
    }
}

#[test]
fn compliance_suite() {
    let dir = suite_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the compliance suite at {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no compliance files in {}",
        dir.display()
    );

    let mut run = 0usize;
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(file).unwrap();
        let suites: Vec<Value> = serde_json::from_str(&text).unwrap();
        for suite in &suites {
            let given = &suite["given"];
            for case in suite["cases"].as_array().unwrap() {
                let expression = case["expression"].as_str().unwrap();
                let expected_result = case.get("result");
                let expected_error = case.get("error").and_then(Value::as_str);
                if expected_result.is_none() && expected_error.is_none() {
                    continue; // bench-only case
                }
                run += 1;
                let outcome: Result<Value, String> = match Expression::parse(expression) {
                    Err(e) => Err(format!("{}: {e}", parse_error_kind(&e))),
                    Ok(expr) => match expr.evaluate(given) {
                        Ok(v) => Ok(v),
                        Err(e) => Err(format!("{}: {e}", eval_error_kind(&e))),
                    },
                };
                let ok = match (&outcome, expected_result, expected_error) {
                    (Ok(got), Some(want), _) => json_eq(got, want),
                    (Err(got), _, Some(kind)) => got.starts_with(&format!("{kind}:")),
                    _ => false,
                };
                if !ok {
                    let expected = match (expected_result, expected_error) {
                        (Some(r), _) => r.to_string(),
                        (None, Some(k)) => format!("error {k}"),
                        _ => String::new(),
                    };
                    failures.push(format!(
                        "{name}: given {} expression {expression:?}: expected {expected}, got {outcome:?}",
                        truncate(&given.to_string())
                    ));
                }
            }
        }
    }
    println!(
        "jmespath compliance: {run} cases run, {} failed",
        failures.len()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(run >= 800, "expected the full suite, ran only {run} cases");
    assert!(
        failures.is_empty(),
        "{} of {run} compliance cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn benchmark_expressions_parse() {
    // The suite's bench cases have no expected value; they must still parse and evaluate.
    let text = fs::read_to_string(suite_dir().join("benchmarks.json")).unwrap();
    let suites: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut count = 0;
    for suite in &suites {
        for case in suite["cases"].as_array().unwrap() {
            let expression = case["expression"].as_str().unwrap();
            let expr =
                Expression::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
            expr.evaluate(&suite["given"])
                .unwrap_or_else(|e| panic!("{expression}: {e}"));
            count += 1;
        }
    }
    assert!(count > 0);
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    }
}
