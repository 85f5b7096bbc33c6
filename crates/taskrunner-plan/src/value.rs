//! Plan values: literal JSON, or explicit symbolic nodes for what is only known at run time.
//!
//! SPEC §8 rule 5: strings are never scanned for `{{` again after planning, so a literal is
//! inert text whatever it contains. Encoding (see `docs/PLAN_FORMAT.md`):
//! `{"$expr": "<source>"}`, `{"$template": ["text", {"$expr": "…"}, …]}`, and
//! `{"$literal": <json>}` for a literal object that has a `$`-prefixed key (so it can never be
//! mistaken for a symbolic node).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use taskrunner_expr::{EvalError, Expression, render_text};

/// One piece of a run-time template; plan-time pieces are already rendered into `Text`.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePiece {
    Text(String),
    Expr(Expression),
}

/// A value in the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanValue {
    /// Fully known while planning.
    Literal(Value),
    /// A single expression evaluated at run time; yields any JSON value.
    Expr(Expression),
    /// Text with run-time expression parts; yields a string.
    Template(Vec<TemplatePiece>),
    /// An array with at least one symbolic element.
    Array(Vec<PlanValue>),
    /// An object with at least one symbolic member.
    Object(BTreeMap<String, PlanValue>),
}

impl PlanValue {
    /// True when nothing is left for run time.
    pub fn is_literal(&self) -> bool {
        matches!(self, PlanValue::Literal(_))
    }

    /// The literal value, when known.
    pub fn as_literal(&self) -> Option<&Value> {
        match self {
            PlanValue::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Builds an array, collapsing to a literal when every element is literal.
    pub(crate) fn array(items: Vec<PlanValue>) -> PlanValue {
        if items.iter().all(PlanValue::is_literal) {
            PlanValue::Literal(Value::Array(
                items.into_iter().filter_map(|v| v.into_literal()).collect(),
            ))
        } else {
            PlanValue::Array(items)
        }
    }

    /// Builds an object, collapsing to a literal when every member is literal.
    pub(crate) fn object(members: BTreeMap<String, PlanValue>) -> PlanValue {
        if members.values().all(PlanValue::is_literal) {
            PlanValue::Literal(Value::Object(
                members
                    .into_iter()
                    .filter_map(|(k, v)| v.into_literal().map(|v| (k, v)))
                    .collect(),
            ))
        } else {
            PlanValue::Object(members)
        }
    }

    fn into_literal(self) -> Option<Value> {
        match self {
            PlanValue::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Resolves the run-time parts against an evaluation context.
    pub fn resolve(&self, context: &Value) -> Result<Value, EvalError> {
        Ok(match self {
            PlanValue::Literal(v) => v.clone(),
            PlanValue::Expr(e) => e.evaluate(context)?,
            PlanValue::Template(pieces) => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        TemplatePiece::Text(t) => out.push_str(t),
                        TemplatePiece::Expr(e) => out.push_str(&render_text(&e.evaluate(context)?)),
                    }
                }
                Value::String(out)
            }
            PlanValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.resolve(context))
                    .collect::<Result<_, _>>()?,
            ),
            PlanValue::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.resolve(context)?)))
                    .collect::<Result<Map<_, _>, EvalError>>()?,
            ),
        })
    }

    /// The plan-format JSON encoding.
    pub fn to_json(&self) -> Value {
        match self {
            PlanValue::Literal(v) => encode_literal(v),
            PlanValue::Expr(e) => expr_node(e),
            PlanValue::Template(pieces) => {
                let parts = pieces
                    .iter()
                    .map(|p| match p {
                        TemplatePiece::Text(t) => Value::String(t.clone()),
                        TemplatePiece::Expr(e) => expr_node(e),
                    })
                    .collect();
                single("$template", Value::Array(parts))
            }
            PlanValue::Array(items) => Value::Array(items.iter().map(PlanValue::to_json).collect()),
            PlanValue::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (escape_key(k), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short human form: literals as compact JSON, symbolic parts as `{{ … }}`.
    pub fn display(&self) -> String {
        match self {
            PlanValue::Literal(Value::String(s)) => s.clone(),
            PlanValue::Literal(v) => v.to_string(),
            PlanValue::Expr(e) => format!("{{{{ {} }}}}", e.source()),
            PlanValue::Template(pieces) => pieces
                .iter()
                .map(|p| match p {
                    TemplatePiece::Text(t) => t.clone(),
                    TemplatePiece::Expr(e) => format!("{{{{ {} }}}}", e.source()),
                })
                .collect(),
            PlanValue::Array(_) | PlanValue::Object(_) => self.to_json().to_string(),
        }
    }
}

fn single(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

fn expr_node(e: &Expression) -> Value {
    single("$expr", Value::String(e.source().to_owned()))
}

/// Members of a symbolic object keep their names; a `$`-prefixed name is written with `$$`.
fn escape_key(key: &str) -> String {
    if key.starts_with('$') {
        format!("${key}")
    } else {
        key.to_owned()
    }
}

fn has_dollar_key(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.keys().any(|k| k.starts_with('$')) || m.values().any(has_dollar_key),
        Value::Array(a) => a.iter().any(has_dollar_key),
        _ => false,
    }
}

fn encode_literal(v: &Value) -> Value {
    if has_dollar_key(v) {
        single("$literal", v.clone())
    } else {
        v.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literal_with_dollar_keys_is_wrapped() {
        let v = PlanValue::Literal(json!({"a": [{"$expr": "x"}]}));
        assert_eq!(v.to_json(), json!({"$literal": {"a": [{"$expr": "x"}]}}));
        assert_eq!(
            PlanValue::Literal(json!({"a": 1})).to_json(),
            json!({"a": 1})
        );
    }

    #[test]
    fn collapse_to_literal() {
        let v = PlanValue::array(vec![
            PlanValue::Literal(json!(1)),
            PlanValue::Literal(json!("a")),
        ]);
        assert_eq!(v, PlanValue::Literal(json!([1, "a"])));
    }
}
