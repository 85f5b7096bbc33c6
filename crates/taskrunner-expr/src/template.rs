//! `{{ expression }}` templates (SPEC §2): parsing into literal and expression parts, and
//! rendering against a context.

use serde_json::Value;

use crate::error::{EvalError, ParseError};
use crate::expression::Expression;
use crate::limits::{EXPR_BYTES_MAX, Limits};
use crate::value::render_text;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    /// Text copied as is.
    Literal(String),
    /// An expression whose value is rendered in place.
    Expr(Expression),
}

/// A string with `{{ expression }}` parts (SPEC §2).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<TemplatePart>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

impl Template {
    /// Parses a template. Error offsets are byte offsets into `source`.
    ///
    /// A `{{` opens an expression that ends at the first `}}` such that the text between is
    /// a complete expression (so `{{ {a: {b: c}} }}` works). Adjacent literal text is merged.
    pub fn parse(source: &str) -> Result<Template, ParseError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest_start = 0;
        while let Some(rel) = source[rest_start..].find("{{") {
            let open = rest_start + rel;
            literal.push_str(&source[rest_start..open]);
            let (expr, end) = parse_one(source, open)?;
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(TemplatePart::Expr(expr));
            rest_start = end;
        }
        literal.push_str(&source[rest_start..]);
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The literal and expression parts, in order.
    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// `Some` when the string is exactly one template, ignoring surrounding whitespace.
    pub fn single_expression(&self) -> Option<&Expression> {
        let mut found = None;
        for part in &self.parts {
            match part {
                TemplatePart::Expr(e) => {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(e);
                }
                TemplatePart::Literal(text) => {
                    if !text.chars().all(is_space) {
                        return None;
                    }
                }
            }
        }
        found
    }

    /// True when the template has no expression parts.
    pub fn is_literal(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p, TemplatePart::Literal(_)))
    }

    /// The expressions of the template, in order.
    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Expr(e) => Some(e),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Renders with the default [`Limits`]: a single-expression template gives the
    /// expression's value (keeping its type); otherwise the parts are concatenated into a
    /// string, expression values rendered with [`render_text`].
    pub fn render(&self, context: &Value) -> Result<Value, EvalError> {
        self.render_with(context, &Limits::default())
    }

    /// Like [`Template::render`], within `limits` (applied to each expression and to the
    /// length of the rendered string).
    pub fn render_with(&self, context: &Value, limits: &Limits) -> Result<Value, EvalError> {
        if let Some(expr) = self.single_expression() {
            return expr.evaluate_with(context, limits);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Expr(expr) => {
                    let value = expr.evaluate_with(context, limits)?;
                    out.push_str(&render_text(&value));
                }
            }
            if out.len() > limits.result_bytes_max {
                return Err(EvalError::ResultTooLarge(limits.result_bytes_max));
            }
        }
        Ok(Value::String(out))
    }
}

/// Parses the expression opened by the `{{` at `open`; returns it and the offset just past
/// its closing `}}`.
fn parse_one(source: &str, open: usize) -> Result<(Expression, usize), ParseError> {
    let body_start = open + 2;
    let after = &source[body_start..];
    let lead = after.len() - after.trim_start_matches(is_space).len();
    let expr_start = body_start + lead;
    let mut first_error: Option<ParseError> = None;
    let mut search = body_start;
    while let Some(rel) = source[search..].find("}}") {
        let close = search + rel;
        search = close + 1;
        if close < expr_start {
            // Only whitespace between `{{` and this `}}`.
            first_error.get_or_insert_with(|| ParseError::new(open, "empty template expression"));
            continue;
        }
        let text = source[expr_start..close].trim_end_matches(is_space);
        if text.is_empty() {
            first_error.get_or_insert_with(|| ParseError::new(open, "empty template expression"));
            continue;
        }
        if text.len() > EXPR_BYTES_MAX {
            // Longer candidates cannot parse either.
            first_error.get_or_insert_with(|| {
                ParseError::new(
                    expr_start,
                    format!("template expression longer than the limit of {EXPR_BYTES_MAX} bytes"),
                )
            });
            break;
        }
        match Expression::parse(text) {
            Ok(expr) => return Ok((expr, close + 2)),
            Err(e) => {
                first_error.get_or_insert(ParseError::new(expr_start + e.offset, e.message));
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        ParseError::new(open, "unterminated template: '{{' without a matching '}}'")
    }))
}
