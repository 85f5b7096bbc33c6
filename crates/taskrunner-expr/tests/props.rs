//! Property tests: parsing arbitrary text never panics and reports in-range offsets;
//! evaluating grammar-generated expressions on random JSON never panics, is deterministic
//! and respects the limits.

use proptest::prelude::*;
use serde_json::{Map, Value};
use taskrunner_expr::{EvalError, Expression, Limits, Template};

/// Printable ASCII biased toward JMESPath tokens.
fn token_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            "a", "foo", "b", ".", "*", "[", "]", "[]", "[?", "{", "}", "(", ")", ",", ":", "|", "||",
            "&&", "&", "!", "==", "!=", "<", "<=", ">", ">=", "@", "`", "'", "\"", "\\", "0", "-1", "2",
            " ", "{{", "}}", "length(", "sort_by(", "map(&", "`1`", "'x'", "\"q\"", "\\u", "\\ud834",
            "é", "\n",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{1,3}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..20).prop_map(Value::from),
        (-10.0f64..10.0).prop_map(Value::from),
        prop::sample::select(vec!["", "a", "b", "foo", "10"]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (prop::sample::select(vec!["a", "b", "foo", "c"]), inner),
                0..5
            )
            .prop_map(|kvs| Value::Object(
                kvs.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

/// What may follow a `.`: identifiers, `*`, or a multiselect.
fn field() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "foo", "c", "\"a\"", "*", "[a, b]", "{k: a}"])
        .prop_map(str::to_owned)
}

/// Syntactically plausible expressions built from the grammar.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "a", "b", "foo", "c", "@", "*", "`1`", "`\"a\"`", "'foo'", "`[1,2]`", "`null`", "\"a\""
        ])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            (inner.clone(), field()).prop_map(|(a, b)| format!("{a}.{b}")),
            (inner.clone(), -3i64..4).prop_map(|(a, i)| format!("{a}[{i}]")),
            (inner.clone(), -3i64..4, prop::option::of(-3i64..4)).prop_map(|(a, i, s)| match s {
                Some(s) => format!("{a}[{i}::{s}]"),
                None => format!("{a}[:{i}]"),
            }),
            (inner.clone(), field()).prop_map(|(a, b)| format!("{a}[*].{b}")),
            (inner.clone(), field()).prop_map(|(a, b)| format!("{a}[].{b}")),
            (inner.clone(), field()).prop_map(|(a, b)| format!("{a}.*.{b}")),
            (inner.clone(), inner.clone(), field()).prop_map(|(a, b, c)| format!("{a}[?{b}].{c}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.[{b}, @]")),
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="])
            )
                .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec!["||", "&&", "|"])
            )
                .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{x: {a}, y: {b}}}")),
            (
                prop::sample::select(vec![
                    "abs",
                    "avg",
                    "ceil",
                    "floor",
                    "keys",
                    "values",
                    "length",
                    "max",
                    "min",
                    "reverse",
                    "sort",
                    "sum",
                    "to_array",
                    "to_string",
                    "to_number",
                    "type",
                    "not_null",
                    "merge",
                ]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            (
                prop::sample::select(vec![
                    "contains",
                    "starts_with",
                    "ends_with",
                    "join",
                    "not_null",
                    "merge"
                ]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(f, a, b)| format!("{f}({a}, {b})")),
            (
                prop::sample::select(vec!["map", "sort_by", "max_by", "min_by"]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(f, a, b)| if f == "map" {
                    format!("map(&{a}, {b})")
                } else {
                    format!("{f}({b}, &{a})")
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parsing_arbitrary_text_never_panics(src in token_soup()) {
        match Expression::parse(&src) {
            Ok(expr) => {
                prop_assert_eq!(expr.source(), src.as_str());
                // Parsed expressions evaluate (or fail cleanly) on an empty context.
                let small = Limits { fuel: 2_000, ..Limits::default() };
                let _ = expr.evaluate_with(&Value::Null, &small);
                let _ = expr.references();
            }
            Err(e) => {
                prop_assert!(e.offset <= src.len(), "offset {} beyond {}", e.offset, src.len());
                prop_assert!(src.is_char_boundary(e.offset));
                prop_assert!(!e.message.is_empty() && !e.message.ends_with('.'));
            }
        }
        match Template::parse(&src) {
            Ok(t) => {
                prop_assert_eq!(t.source(), src.as_str());
                if t.is_literal() {
                    let rendered = t.render(&Value::Null);
                    prop_assert_eq!(rendered, Ok(Value::String(src.clone())));
                }
            }
            Err(e) => {
                prop_assert!(e.offset <= src.len());
                prop_assert!(src.is_char_boundary(e.offset));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let src = String::from_utf8_lossy(&bytes);
        if let Err(e) = Expression::parse(&src) {
            prop_assert!(e.offset <= src.len());
        }
        if let Err(e) = Template::parse(&src) {
            prop_assert!(e.offset <= src.len());
        }
    }

    #[test]
    fn generated_expressions_evaluate_within_limits(src in expression(), data in json_value(), fuel in prop_oneof![0u64..60, 60u64..5_000]) {
        let expr = match Expression::parse(&src) {
            Ok(expr) => expr,
            // A few generated forms are not valid JMESPath (e.g. a literal after a dot).
            Err(e) => {
                prop_assert!(e.offset <= src.len());
                return Ok(());
            }
        };
        let _ = expr.references();
        let generous = Limits::default();
        let full = expr.evaluate_with(&data, &generous);
        // Deterministic.
        prop_assert_eq!(&full, &expr.evaluate_with(&data, &generous));

        let small = Limits { fuel, depth_max: 16, result_bytes_max: 2_000 };
        match expr.evaluate_with(&data, &small) {
            Ok(v) => {
                // Success under tight limits agrees with the unconstrained result.
                prop_assert_eq!(Ok(v.clone()), full);
                let input_size = data.to_string().len();
                prop_assert!(v.to_string().len() <= 4 * (2_000 + input_size + src.len()));
            }
            Err(EvalError::FuelExhausted(f)) => prop_assert_eq!(f, fuel),
            Err(EvalError::TooDeep(d)) => prop_assert_eq!(d, 16),
            Err(EvalError::ResultTooLarge(n)) => prop_assert_eq!(n, 2_000),
            // Type errors are data-dependent, and must agree with the unconstrained run.
            Err(other) => prop_assert_eq!(Err(other), full),
        }
        if fuel == 0 {
            prop_assert_eq!(expr.evaluate_with(&data, &small), Err(EvalError::FuelExhausted(0)));
        }
    }

    #[test]
    fn templates_of_generated_expressions_render(src in expression(), data in json_value()) {
        if Expression::parse(&src).is_err() || src.contains("}}") {
            return Ok(());
        }
        let single = Template::parse(&format!(" {{{{ {src} }}}} ")).unwrap();
        prop_assert!(single.single_expression().is_some());
        let direct = Expression::parse(&src).unwrap().evaluate(&data);
        prop_assert_eq!(single.render(&data), direct.clone());
        let mixed = Template::parse(&format!("v={{{{{src}}}}}")).unwrap();
        let rendered = mixed.render(&data);
        match direct {
            Ok(v) => prop_assert_eq!(rendered, Ok(Value::String(format!("v={}", taskrunner_expr::render_text(&v))))),
            Err(e) => prop_assert_eq!(rendered, Err(e)),
        }
    }
}

#[test]
fn generator_produces_mostly_valid_expressions_that_hit_limits() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut parsed, mut non_null, mut out_of_fuel) = (0, 0, 0);
    for _ in 0..1000 {
        let src = expression().new_tree(&mut runner).unwrap().current();
        let data = json_value().new_tree(&mut runner).unwrap().current();
        if let Ok(expr) = Expression::parse(&src) {
            parsed += 1;
            match expr.evaluate_with(
                &data,
                &Limits {
                    fuel: 10,
                    depth_max: 16,
                    result_bytes_max: 2_000,
                },
            ) {
                Ok(v) if !v.is_null() => non_null += 1,
                Err(EvalError::FuelExhausted(_)) => out_of_fuel += 1,
                _ => {}
            }
        }
    }
    assert!(
        parsed > 800,
        "only {parsed} of 1000 generated expressions parse"
    );
    assert!(
        non_null > 100,
        "only {non_null} evaluations gave a non-null value"
    );
    assert!(
        out_of_fuel > 30,
        "only {out_of_fuel} evaluations ran out of fuel"
    );
}
