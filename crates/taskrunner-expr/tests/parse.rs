//! Parse errors: messages and byte offsets, limits on source size and nesting.

use taskrunner_expr::{EXPR_BYTES_MAX, EXPR_DEPTH_MAX, Expression, ParseError};

fn err(src: &str) -> ParseError {
    match Expression::parse(src) {
        Ok(e) => panic!("{src:?} parsed as {e:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_err(src: &str, offset: usize, message: &str) {
    let e = err(src);
    assert_eq!(e.offset, offset, "offset for {src:?}: {e:?}");
    assert_eq!(e.message, message, "message for {src:?}");
}

#[test]
fn unexpected_tokens_report_their_offset() {
    assert_err("foo[0, 1]", 5, "expected ']' but found ','");
    assert_err("foo[?x == ]", 10, "expected an expression but found ']'");
    assert_err(
        "foo..bar",
        4,
        "expected an identifier, '*', '[' or '{' after '.' but found '.'",
    );
    assert_err(
        "foo[*]bar",
        6,
        "expected end of input but found identifier 'bar'",
    );
    assert_err("{a: @", 5, "expected ',' or '}' but found end of input");
    assert_err("a[1:2:3:4]", 7, "expected a number or ']' but found ':'");
    assert_err("", 0, "expected an expression but found end of input");
    assert_err("foo ||", 6, "expected an expression but found end of input");
}

#[test]
fn lexical_errors() {
    assert_err("a.'abc", 2, "unterminated raw string literal");
    assert_err("x == `[1", 5, "unterminated json literal");
    assert_err("\"abc", 0, "unterminated quoted identifier");
    assert_err("a = b", 2, "unexpected character '=' (did you mean '=='?)");
    assert_err("ab.é", 3, "unexpected character 'é'");
    assert_err(
        "a[99999999999999999999]",
        2,
        "number out of range: 99999999999999999999",
    );
    assert!(
        err("\"\\u\"")
            .message
            .starts_with("invalid escape sequence in quoted identifier")
    );
    assert!(
        err("`{bad json`")
            .message
            .starts_with("invalid json literal")
    );
    assert_err("@``", 1, "empty json literal");
    // The legacy unquoted-word literal form is still accepted.
    let legacy = Expression::parse("`foo`")
        .unwrap()
        .evaluate(&serde_json::Value::Null)
        .unwrap();
    assert_eq!(legacy, serde_json::json!("foo"));
}

#[test]
fn earlier_parse_error_wins_over_later_lex_error() {
    // The parser reports the first problem in source order.
    assert_err(
        "a..'unterminated",
        2,
        "expected an identifier, '*', '[' or '{' after '.' but found '.'",
    );
}

#[test]
fn unknown_functions_and_arity_at_parse_time() {
    assert_err("lenght(x)", 0, "unknown function 'lenght'");
    assert_err("a.b | lenght(@)", 6, "unknown function 'lenght'");
    assert_err(
        "abs(`1`, `2`)",
        3,
        "wrong number of arguments: abs() takes 1 argument, got 2",
    );
    assert_err(
        "not_null()",
        8,
        "wrong number of arguments: not_null() takes at least 1 argument, got 0",
    );
    assert_err(
        "join(',')",
        4,
        "wrong number of arguments: join() takes 2 arguments, got 1",
    );
    assert_err(
        "\"length\"(x)",
        0,
        "quoted identifiers cannot be function names",
    );
}

#[test]
fn messages_are_lowercase_without_trailing_period() {
    for src in [
        "foo[",
        "'x",
        "lenght(a)",
        "a{",
        "`",
        "(((",
        "!",
        "a.1",
        "&",
        "[?",
        "a[?b",
        "x[:::]",
    ] {
        let e = err(src);
        assert!(!e.message.ends_with('.'), "{src:?}: {}", e.message);
        assert!(
            e.message.chars().next().is_some_and(|c| !c.is_uppercase()),
            "{src:?}: {}",
            e.message
        );
        assert!(
            e.offset <= src.len(),
            "{src:?}: offset {} past end",
            e.offset
        );
    }
}

#[test]
fn source_longer_than_limit_is_rejected() {
    let long = format!("'{}'", "x".repeat(EXPR_BYTES_MAX));
    let e = err(&long);
    assert!(e.message.contains("longer than the limit"), "{e:?}");
    let ok = format!("'{}'", "x".repeat(EXPR_BYTES_MAX - 2));
    assert!(Expression::parse(&ok).is_ok());
}

#[test]
fn deep_nesting_is_rejected_without_overflowing() {
    for open in ["(", "[", "!", "{a:", "& ", "abs(", "[?"] {
        let src = open.repeat(1000);
        let src = &src[..src.len().min(EXPR_BYTES_MAX)];
        let e = err(src);
        assert!(e.message.contains("nested deeper than"), "{open}: {e:?}");
    }
    // Left-associative chains deeper than the limit are rejected after parsing.
    let chain = vec!["a"; EXPR_DEPTH_MAX + 10].join(" || ");
    assert!(err(&chain).message.contains("nested deeper than"));
    // Reasonable nesting is fine.
    let nested = format!("{}a{}", "(".repeat(50), ")".repeat(50));
    assert!(Expression::parse(&nested).is_ok());
    // Field chains are flat, so long ones are fine.
    let fields = vec!["a"; 1000].join(".");
    assert!(Expression::parse(&fields).is_ok());
}

#[test]
fn expression_keeps_source_and_compares_by_it() {
    let a = Expression::parse("inputs.target").unwrap();
    let b = a.clone();
    assert_eq!(a.source(), "inputs.target");
    assert_eq!(a, b);
    assert_ne!(a, Expression::parse("inputs.other").unwrap());
    assert_eq!(a.to_string(), "inputs.target");
}
