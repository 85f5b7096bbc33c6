//! Evaluation behaviour beyond the compliance suite: numbers, errors and limits.

use serde_json::{Value, json};
use taskrunner_expr::{EvalError, Expression, Limits, is_truthy, render_text};

fn eval(src: &str, data: &Value) -> Result<Value, EvalError> {
    Expression::parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .evaluate(data)
}

#[test]
fn field_chains_and_missing_fields() {
    let data = json!({"inputs": {"target": "x86", "n": 3}, "steps": {"write-report": {"outputs": {"x": [1, 2]}}}});
    assert_eq!(eval("inputs.target", &data).unwrap(), json!("x86"));
    assert_eq!(
        eval("steps.\"write-report\".outputs.x[-1]", &data).unwrap(),
        json!(2)
    );
    assert_eq!(eval("inputs.missing.deeper", &data).unwrap(), Value::Null);
    assert_eq!(
        eval("length(steps.*.outputs.x[]) > `1` && inputs.n", &data).unwrap(),
        json!(3)
    );
    // Object projections keep projecting later field paths.
    assert_eq!(eval("steps.*.outputs.x", &data).unwrap(), json!([[1, 2]]));
    assert_eq!(
        eval("*.*.outputs", &data).unwrap(),
        json!([[], [{"x": [1, 2]}]])
    );
}

#[test]
fn not_applies_to_the_whole_path() {
    let data = json!({"inputs": {"flag": false, "n": 1, "xs": [1]}});
    assert_eq!(eval("!inputs.flag", &data).unwrap(), json!(true));
    assert_eq!(eval("!inputs.n == `false`", &data).unwrap(), json!(true));
    assert_eq!(eval("!inputs.flag && inputs.n", &data).unwrap(), json!(1));
    assert_eq!(eval("!inputs.xs[0]", &data).unwrap(), json!(false));
    assert_eq!(eval("!!inputs.n", &data).unwrap(), json!(true));
}

#[test]
fn integers_stay_integers() {
    let data = json!({"xs": [1, 2, 3], "fs": [1.5, 2.5]});
    assert_eq!(eval("sum(xs)", &data).unwrap(), json!(6));
    assert!(eval("sum(xs)", &data).unwrap().is_i64());
    assert!(eval("avg(xs)", &data).unwrap().is_f64());
    assert_eq!(eval("avg(xs)", &data).unwrap(), json!(2.0));
    assert_eq!(eval("sum(fs)", &data).unwrap(), json!(4.0));
    assert_eq!(eval("abs(`-3`)", &data).unwrap(), json!(3));
    assert_eq!(eval("floor(`2.5`)", &data).unwrap(), json!(2));
    assert_eq!(eval("to_number('42')", &data).unwrap(), json!(42));
    assert_eq!(eval("to_number('4.5')", &data).unwrap(), json!(4.5));
    assert_eq!(eval("to_number('nan')", &data).unwrap(), Value::Null);
    assert_eq!(eval("`1` == `1.0`", &data).unwrap(), json!(true));
    // Integer overflow falls back to floats rather than wrapping or panicking.
    let big = json!({"xs": [i64::MAX, i64::MAX]});
    assert!(eval("sum(xs)", &big).unwrap().is_f64());
    assert_eq!(
        eval("abs(`-9223372036854775808`)", &big).unwrap(),
        json!(9_223_372_036_854_775_808u64)
    );
}

#[test]
fn function_errors_have_kinds() {
    let data = json!({"s": "str", "xs": [1, "a"], "people": [{"n": 1}, {"n": "x"}]});
    assert!(matches!(
        eval("abs(s)", &data),
        Err(EvalError::InvalidType(_))
    ));
    assert!(matches!(
        eval("sort(xs)", &data),
        Err(EvalError::InvalidType(_))
    ));
    assert!(matches!(
        eval("sort_by(people, &n)", &data),
        Err(EvalError::InvalidType(_))
    ));
    assert!(matches!(
        eval("sort_by(people, n)", &data),
        Err(EvalError::InvalidType(_))
    ));
    assert!(matches!(
        eval("xs[::0]", &data),
        Err(EvalError::InvalidValue(_))
    ));
    assert!(matches!(
        eval("&foo", &data),
        Err(EvalError::InvalidType(_))
    ));
    let msg = eval("abs(s)", &data).unwrap_err().to_string();
    assert_eq!(
        msg,
        "invalid type: abs() argument 1 must be a number, got string"
    );
}

#[test]
fn slices_with_extreme_steps_are_bounded() {
    let data = json!({"xs": [0, 1, 2, 3, 4, 5]});
    assert_eq!(eval("xs[::-1]", &data).unwrap(), json!([5, 4, 3, 2, 1, 0]));
    assert_eq!(
        eval("xs[::9223372036854775807]", &data).unwrap(),
        json!([0])
    );
    assert_eq!(
        eval("xs[::-9223372036854775808]", &data).unwrap(),
        json!([5])
    );
    assert_eq!(
        eval("xs[-9223372036854775808:9223372036854775807]", &data).unwrap(),
        json!([0, 1, 2, 3, 4, 5])
    );
    assert_eq!(eval("xs[-100:100:2]", &data).unwrap(), json!([0, 2, 4]));
    assert_eq!(eval("xs[100:-100:-2]", &data).unwrap(), json!([5, 3, 1]));
}

#[test]
fn fuel_is_exhausted_on_large_work() {
    let data = json!({"xs": (0..1000).collect::<Vec<_>>()});
    let limits = Limits {
        fuel: 500,
        ..Limits::default()
    };
    let expr = Expression::parse("xs[?@ > `10`]").unwrap();
    assert_eq!(
        expr.evaluate_with(&data, &limits),
        Err(EvalError::FuelExhausted(500))
    );
    // The same expression with ample fuel succeeds.
    assert_eq!(expr.evaluate(&data).unwrap().as_array().unwrap().len(), 989);
    // Even a single field costs fuel.
    let none = Limits {
        fuel: 0,
        ..Limits::default()
    };
    assert_eq!(
        Expression::parse("a").unwrap().evaluate_with(&data, &none),
        Err(EvalError::FuelExhausted(0))
    );
}

#[test]
fn depth_limit_is_enforced() {
    let limits = Limits {
        depth_max: 5,
        ..Limits::default()
    };
    let expr = Expression::parse("a.b.c | [[[[[[[@]]]]]]]").unwrap();
    let data = json!({"a": {"b": {"c": 1}}});
    assert_eq!(
        expr.evaluate_with(&data, &limits),
        Err(EvalError::TooDeep(5))
    );
    assert_eq!(expr.evaluate(&data).unwrap(), json!([[[[[[[1]]]]]]]));
}

#[test]
fn result_size_is_bounded() {
    // Each stage doubles the value; 40 stages would be 2^40 copies.
    let doubling = vec!["[@, @]"; 40].join(" | ");
    let expr = Expression::parse(&format!("'{}' | {doubling}", "x".repeat(100))).unwrap();
    let limits = Limits {
        result_bytes_max: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(
        expr.evaluate_with(&json!({}), &limits),
        Err(EvalError::ResultTooLarge(1 << 20))
    );
    // With the default limits it runs out of size or fuel, quickly, never memory.
    let err = expr.evaluate(&json!({})).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::ResultTooLarge(_) | EvalError::FuelExhausted(_)
        ),
        "{err:?}"
    );
}

#[test]
fn truthiness_and_render_text() {
    for v in [json!(null), json!(false), json!(""), json!([]), json!({})] {
        assert!(!is_truthy(&v), "{v}");
    }
    for v in [
        json!(0),
        json!(true),
        json!("0"),
        json!([0]),
        json!({"a": null}),
    ] {
        assert!(is_truthy(&v), "{v}");
    }
    assert_eq!(render_text(&json!("plain")), "plain");
    assert_eq!(render_text(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    assert_eq!(render_text(&json!(null)), "null");
}

#[test]
fn deep_equality_of_deep_values_does_not_recurse() {
    let mut v = json!(1);
    for _ in 0..100 {
        v = json!([v]);
    }
    let data = json!({"a": v.clone(), "b": v});
    assert_eq!(eval("a == b", &data).unwrap(), json!(true));
}

#[test]
fn deepest_accepted_expressions_evaluate_on_a_small_stack() {
    // Test threads have small (2 MiB) stacks: the deepest expressions the parser accepts
    // must evaluate there without overflowing.
    let cases = [
        format!("{}@{}", "[".repeat(120), "]".repeat(120)),
        format!("{}a", "!".repeat(120)),
        format!("{}a{}", "abs(".repeat(100), ")".repeat(100)),
        format!("{}a{}", "not_null(".repeat(100), ")".repeat(100)),
        format!("{}a{}", "{k: ".repeat(100), "}".repeat(100)),
        format!("{}`1`{}", "sort_by(@, &".repeat(60), ")".repeat(60)),
        vec!["a[*]"; 110].join("."),
        vec!["a"; 120].join(" || "),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            for src in &cases {
                let expr = match Expression::parse(src) {
                    Ok(e) => e,
                    Err(e) => {
                        assert!(e.message.contains("nested deeper"), "{src}: {e}");
                        continue;
                    }
                };
                let _ = expr.references();
                let data = json!({"a": [{"a": [1]}]});
                match expr.evaluate(&data) {
                    Ok(_) | Err(EvalError::TooDeep(_)) | Err(EvalError::InvalidType(_)) => {}
                    Err(other) => panic!("{src}: {other}"),
                }
            }
        })
        .unwrap();
    handle.join().unwrap();
}
