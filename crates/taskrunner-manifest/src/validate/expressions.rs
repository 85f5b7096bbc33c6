//! Expressions, conditions and templates in the manifest: parsed here, their references
//! recorded for the cross-reference checks (`crate::refs`).

use std::collections::BTreeMap;

use serde_json::Value as Json;
use taskrunner_expr::{Expression, ParseError, References, Template, TemplatePart};

use super::reader::{Obj, join};
use super::{Ctx, Validator};
use crate::codes;
use crate::model::*;
use crate::refs::Use;
use crate::schema;
use crate::yaml::{Node, Pos, Value};

/// The context roots every expression may read (SPEC §2).
pub(crate) const CONTEXT_ROOTS: &[&str] = &["inputs", "secrets", "steps", "run"];

impl Validator {
    fn record(&mut self, refs: References, path: &str, pos: Pos, ctx: &Ctx) {
        self.uses.push(Use {
            refs,
            path: path.to_owned(),
            pos,
            target: ctx.target.clone(),
            vars: ctx.vars.clone(),
        });
    }

    pub(super) fn expr_error(&mut self, path: &str, pos: Pos, what: &str, e: &ParseError) {
        let code = if what == "template" {
            codes::TEMPLATE_SYNTAX
        } else {
            codes::EXPR_SYNTAX
        };
        self.error(
            code,
            path,
            pos,
            format!(
                "invalid {what} at offset {}: {}",
                e.offset,
                schema::lowercase_first(&e.message)
            ),
        );
    }

    /// A condition-like expression: a bare expression, a YAML boolean, or a string that is
    /// exactly one `{{ }}` template.
    pub(super) fn condition(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Expression> {
        let expr = match &node.value {
            Value::Bool(b) => {
                let text = if *b { "`true`" } else { "`false`" };
                match Expression::parse(text) {
                    Ok(e) => e,
                    Err(e) => {
                        self.expr_error(path, node.pos, "expression", &e);
                        return None;
                    }
                }
            }
            Value::Str(s) => self.expression_text(s, path, node.pos)?,
            _ => {
                self.wrong_type(path, node, "an expression string");
                return None;
            }
        };
        self.record(expr.references(), path, node.pos, ctx);
        Some(expr)
    }

    /// Parses a bare expression, or a string that is exactly one `{{ }}` template.
    fn expression_text(&mut self, s: &str, path: &str, pos: Pos) -> Option<Expression> {
        let trimmed = s.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") {
            match Template::parse(s) {
                Ok(t) => match t.single_expression() {
                    Some(e) => return Some(e.clone()),
                    None => {
                        self.error(
                            codes::EXPR_SYNTAX,
                            path,
                            pos,
                            "expected a bare expression or exactly one {{ }} template".to_owned(),
                        );
                        return None;
                    }
                },
                Err(e) => {
                    self.expr_error(path, pos, "template", &e);
                    return None;
                }
            }
        }
        match Expression::parse(s) {
            Ok(e) => Some(e),
            Err(e) => {
                self.expr_error(path, pos, "expression", &e);
                None
            }
        }
    }

    pub(super) fn expression(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Expression> {
        let Value::Str(s) = &node.value else {
            self.wrong_type(path, node, "an expression string");
            return None;
        };
        let expr = self.expression_text(s, path, node.pos)?;
        self.record(expr.references(), path, node.pos, ctx);
        Some(expr)
    }

    fn template_str(&mut self, s: &str, path: &str, pos: Pos, ctx: &Ctx) -> Option<Template> {
        match Template::parse(s) {
            Ok(t) => {
                let mut refs = References::default();
                for part in t.parts() {
                    if let TemplatePart::Expr(e) = part {
                        let r = e.references();
                        refs.paths.extend(r.paths);
                        refs.whole_root |= r.whole_root;
                    }
                }
                if !refs.paths.is_empty() || refs.whole_root {
                    self.record(refs, path, pos, ctx);
                }
                Some(t)
            }
            Err(e) => {
                self.expr_error(path, pos, "template", &e);
                None
            }
        }
    }

    pub(super) fn template(&mut self, node: &Node, path: &str, ctx: &Ctx) -> Option<Template> {
        let Value::Str(s) = &node.value else {
            self.wrong_type(path, node, "a template string");
            return None;
        };
        self.template_str(s, path, node.pos, ctx)
    }

    pub(super) fn opt_template(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        ctx: &Ctx,
    ) -> Result<Option<Template>, ()> {
        match obj.get(key) {
            None => Ok(None),
            Some(node) => self
                .template(node, &obj.field_path(key), ctx)
                .map(Some)
                .ok_or(()),
        }
    }

    pub(super) fn template_value(
        &mut self,
        node: &Node,
        path: &str,
        ctx: &Ctx,
    ) -> Option<TemplateValue> {
        Some(match &node.value {
            Value::Null => TemplateValue::Null,
            Value::Bool(b) => TemplateValue::Bool(*b),
            Value::Int(i) => TemplateValue::Number(self.int_number(*i, path, node.pos)?),
            Value::BigInt(text) => {
                self.big_int(text, path, node.pos);
                return None;
            }
            Value::Float(f) => TemplateValue::Number(self.float_number(*f, path, node.pos)?),
            Value::Str(s) => TemplateValue::String(self.template_str(s, path, node.pos, ctx)?),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.template_value(item, &format!("{path}[{i}]"), ctx) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                TemplateValue::Array(out)
            }
            Value::Map(entries) => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for entry in entries {
                    match self.template_value(&entry.value, &join(path, &entry.key), ctx) {
                        Some(v) => {
                            out.insert(entry.key.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                TemplateValue::Object(out)
            }
        })
    }
}

/// A JMESPath raw literal (`` `…` ``) holding `value`.
pub(super) fn json_literal_expression(value: &Json) -> String {
    format!("`{}`", value.to_string().replace('`', "\\`"))
}
