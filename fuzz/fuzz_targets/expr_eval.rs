//! Fuzzes expression and template parsing and evaluation.
//!
//! Input: `<expression>\0<json document>`. The expression is parsed (as an expression and
//! as a template) and evaluated against the document (or `null` when it is not JSON) with
//! small limits. Any panic, overflow or runaway allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use taskrunner_expr::{EvalError, Expression, Limits, Template};

fuzz_target!(|data: &[u8]| {
    let (expr_bytes, doc_bytes) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(expr_bytes) else {
        return;
    };
    let document: Value = serde_json::from_slice(doc_bytes).unwrap_or(Value::Null);
    let limits = Limits {
        fuel: 20_000,
        depth_max: 64,
        result_bytes_max: 1 << 20,
    };

    match Expression::parse(source) {
        Ok(expr) => {
            assert_eq!(expr.source(), source);
            let _ = expr.references();
            match expr.evaluate_with(&document, &limits) {
                Err(EvalError::FuelExhausted(f)) => assert_eq!(f, limits.fuel),
                Err(EvalError::TooDeep(d)) => assert_eq!(d, limits.depth_max),
                Err(EvalError::ResultTooLarge(n)) => assert_eq!(n, limits.result_bytes_max),
                _ => {}
            }
        }
        Err(e) => assert!(e.offset <= source.len()),
    }

    match Template::parse(source) {
        Ok(template) => {
            let _ = template.render_with(&document, &limits);
        }
        Err(e) => assert!(e.offset <= source.len()),
    }
});
