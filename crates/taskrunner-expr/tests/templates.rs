//! Templates: parsing into parts, single-expression typing, rendering and errors.

use serde_json::{Value, json};
use taskrunner_expr::{Expression, Template, TemplatePart};

fn tpl(src: &str) -> Template {
    Template::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn ctx() -> Value {
    json!({"inputs": {"n": 3, "name": "web", "list": [1, "a", null], "obj": {"k": "v"}}})
}

#[test]
fn single_template_keeps_the_value_type() {
    let t = tpl("{{ inputs.n }}");
    assert_eq!(
        t.single_expression().map(Expression::source),
        Some("inputs.n")
    );
    assert_eq!(t.render(&ctx()).unwrap(), json!(3));
    // Surrounding whitespace is ignored for the single-expression rule.
    let t = tpl("  {{inputs.list}}\n");
    assert!(t.single_expression().is_some());
    assert_eq!(t.render(&ctx()).unwrap(), json!([1, "a", null]));
}

#[test]
fn mixed_templates_concatenate_compact_json() {
    let t = tpl(
        "n={{ inputs.n }} list={{ inputs.list }} obj={{inputs.obj}} name={{ inputs.name }} none={{ inputs.x }}",
    );
    assert!(t.single_expression().is_none());
    assert_eq!(
        t.render(&ctx()).unwrap(),
        json!(r#"n=3 list=[1,"a",null] obj={"k":"v"} name=web none=null"#)
    );
    let two = tpl("{{ inputs.n }}{{ inputs.n }}");
    assert!(two.single_expression().is_none());
    assert_eq!(two.render(&ctx()).unwrap(), json!("33"));
}

#[test]
fn literal_templates() {
    let t = tpl("just text } }} {");
    assert!(t.is_literal());
    assert_eq!(
        t.parts(),
        &[TemplatePart::Literal("just text } }} {".to_owned())]
    );
    assert_eq!(t.render(&ctx()).unwrap(), json!("just text } }} {"));
    assert_eq!(tpl("").parts(), &[] as &[TemplatePart]);
    assert_eq!(tpl("").render(&ctx()).unwrap(), json!(""));
}

#[test]
fn escaping_braces_with_a_raw_string() {
    let t = tpl("{{'{{'}} not a template }}");
    assert_eq!(t.render(&ctx()).unwrap(), json!("{{ not a template }}"));
}

#[test]
fn nested_braces_end_at_the_first_complete_expression() {
    let t = tpl("{{ {a: {b: inputs.n}} }}");
    assert_eq!(t.render(&ctx()).unwrap(), json!({"a": {"b": 3}}));
    let t = tpl("x{{ {a: inputs.n} }}y}}");
    assert_eq!(t.render(&ctx()).unwrap(), json!(r#"x{"a":3}y}}"#));
}

#[test]
fn parts_are_split_and_trimmed() {
    let t = tpl("a {{  inputs.n\t}} b");
    let sources: Vec<String> = t
        .parts()
        .iter()
        .map(|p| match p {
            TemplatePart::Literal(s) => format!("L:{s}"),
            TemplatePart::Expr(e) => format!("E:{}", e.source()),
        })
        .collect();
    assert_eq!(sources, ["L:a ", "E:inputs.n", "L: b"]);
    assert_eq!(t.source(), "a {{  inputs.n\t}} b");
    assert_eq!(t.expressions().count(), 1);
}

#[test]
fn errors_have_offsets_into_the_whole_string() {
    let e = Template::parse("abc {{ x").unwrap_err();
    assert_eq!(e.offset, 4);
    assert!(e.message.starts_with("unterminated template"), "{e:?}");

    let e = Template::parse("ab {{ }}").unwrap_err();
    assert_eq!(
        (e.offset, e.message.as_str()),
        (3, "empty template expression")
    );

    // The first candidate's error, translated: `foo[` starts at 6, the error is at its end.
    let e = Template::parse("ab {{ foo[ }}").unwrap_err();
    assert_eq!(e.offset, 10, "{e:?}");

    let e = Template::parse("{{ a }} {{ lenght(a) }}").unwrap_err();
    assert_eq!(
        (e.offset, e.message.as_str()),
        (11, "unknown function 'lenght'")
    );
}

#[test]
fn render_errors_propagate() {
    let t = tpl("value: {{ abs(inputs.name) }}");
    assert!(t.render(&ctx()).is_err());
}
