//! Map, loop and conditional steps: items, iteration variables, loop bounds, branches.

use serde_json::Value as Json;
use taskrunner_expr::Expression;

use super::expressions::{CONTEXT_ROOTS, json_literal_expression};
use super::lexical::{is_identifier, range_len};
use super::reader::Obj;
use super::{Ctx, Validator};
use crate::codes;
use crate::model::*;
use crate::refs::{ListKind, Site, UseTarget};
use crate::schema;
use crate::yaml::{Node, Value};

const MAP_FIELDS: &[&str] = &["items", "step", "maxParallel"];
const LOOP_FIELDS: &[&str] = &[
    "items",
    "iterator",
    "index",
    "maxIterations",
    "until",
    "aggregation",
    "steps",
];
const LOOP_ITEMS_FIELDS: &[&str] = &["expression", "range", "static"];
const RANGE_FIELDS: &[&str] = &["start", "end", "step"];
const CONDITIONAL_FIELDS: &[&str] = &["branches", "else", "outputUnion"];
const BRANCH_FIELDS: &[&str] = &["when", "steps"];

impl Validator {
    pub(super) fn map(&mut self, node: &Node, path: &str, me: usize, ctx: &Ctx) -> Option<MapStep> {
        let obj = self.object(node, path, MAP_FIELDS)?;
        let before = self.diags.len();
        let items = match obj.get("items") {
            None => {
                self.missing(&obj, "items");
                None
            }
            Some(node) => {
                let items_path = obj.field_path("items");
                match &node.value {
                    Value::Seq(list) => {
                        if list.len() as u64 > MAP_ITEMS_MAX {
                            self.error(
                                codes::MAX_ITERATIONS,
                                &items_path,
                                node.pos,
                                format!(
                                    "map has {} items, expected at most {MAP_ITEMS_MAX}",
                                    list.len()
                                ),
                            );
                        }
                        self.json(node, &items_path).and_then(|v| {
                            let literal = json_literal_expression(&v);
                            match Expression::parse(&literal) {
                                Ok(e) => Some(e),
                                Err(e) => {
                                    self.expr_error(&items_path, node.pos, "expression", &e);
                                    None
                                }
                            }
                        })
                    }
                    _ => self.expression(node, &items_path, ctx),
                }
            }
        };
        let max_parallel = self
            .opt_u32(&obj, "maxParallel", 1)
            .ok()
            .flatten()
            .unwrap_or(1);
        let mut vars = ctx.vars.clone();
        vars.push("item".to_owned());
        vars.push("index".to_owned());
        let list = self.graph.add_list(Some(me), ListKind::Iteration);
        let step = match obj.get("step") {
            None => {
                self.missing(&obj, "step");
                None
            }
            Some(node) => self.step(node, &obj.field_path("step"), list, 0, &vars),
        };
        let (items, step) = (items?, step?);
        (self.diags.len() == before).then_some(MapStep {
            items,
            step: Box::new(step),
            max_parallel,
        })
    }

    pub(super) fn loop_step(
        &mut self,
        node: &Node,
        path: &str,
        me: usize,
        ctx: &Ctx,
    ) -> Option<LoopStep> {
        let obj = self.object(node, path, LOOP_FIELDS)?;
        let before = self.diags.len();
        let max_iterations = self
            .opt_int(
                &obj,
                "maxIterations",
                1,
                i64::try_from(LOOP_ITERATIONS_MAX).unwrap_or(i64::MAX),
            )
            .ok()
            .flatten()
            .and_then(|i| u64::try_from(i).ok())
            .unwrap_or(LOOP_ITERATIONS_DEFAULT);
        let items = match obj.get("items") {
            None => {
                self.missing(&obj, "items");
                None
            }
            Some(node) => self.loop_items(node, &obj.field_path("items"), max_iterations, ctx),
        };
        let iterator = self.iteration_var(&obj, "iterator", "item");
        let index = self.iteration_var(&obj, "index", "index");
        if let (Some(it), Some(ix)) = (&iterator, &index)
            && it == ix
        {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path("index"),
                obj.key_pos("index"),
                format!("iterator and index are both '{it}', expected different names"),
            );
        }
        let aggregation = match self.opt_str(&obj, "aggregation") {
            None => Aggregation::Collect,
            Some((a, pos)) => match a.as_str() {
                "collect" => Aggregation::Collect,
                "merge" => Aggregation::Merge,
                "last" => Aggregation::Last,
                "first" => Aggregation::First,
                "none" => Aggregation::None,
                _ => {
                    self.invalid_enum(
                        &obj.field_path("aggregation"),
                        pos,
                        &a,
                        &["collect", "merge", "last", "first", "none"],
                    );
                    Aggregation::Collect
                }
            },
        };
        let mut vars = ctx.vars.clone();
        vars.push(iterator.clone().unwrap_or_else(|| "item".to_owned()));
        vars.push(index.clone().unwrap_or_else(|| "index".to_owned()));
        let list = self.graph.add_list(Some(me), ListKind::Iteration);
        let steps = self.req_step_list(&obj, "steps", list, &vars);
        // `until` runs after each iteration with that iteration's variables and outputs bound:
        // it sees the body as if it were placed after the body's last step.
        let body_len = obj
            .get("steps")
            .and_then(|n| {
                if let Value::Seq(s) = &n.value {
                    Some(s.len())
                } else {
                    None
                }
            })
            .unwrap_or(0);
        let until_ctx = Ctx {
            target: UseTarget::Step(Site {
                list,
                index: u32::try_from(body_len).unwrap_or(u32::MAX),
            }),
            vars,
        };
        let until = obj
            .get("until")
            .and_then(|n| self.condition(n, &obj.field_path("until"), &until_ctx));
        let (items, iterator, index, steps) = (items?, iterator?, index?, steps?);
        (self.diags.len() == before).then_some(LoopStep {
            items,
            iterator,
            index,
            max_iterations,
            until,
            aggregation,
            steps,
        })
    }

    fn iteration_var(&mut self, obj: &Obj<'_>, key: &str, default: &str) -> Option<String> {
        let Some((name, pos)) = self.opt_str(obj, key) else {
            return (!obj.has(key)).then(|| default.to_owned());
        };
        if !is_identifier(&name) {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path(key),
                pos,
                format!(
                    "'{}' is not a valid {key} name, expected ^[A-Za-z_][A-Za-z0-9_]*$",
                    schema::excerpt(&name)
                ),
            );
            return None;
        }
        if CONTEXT_ROOTS.contains(&name.as_str()) {
            self.error(
                codes::ITERATION_VARIABLE,
                obj.field_path(key),
                pos,
                format!(
                    "'{name}' is a reserved context variable, expected a name other than {}",
                    CONTEXT_ROOTS.join(", ")
                ),
            );
            return None;
        }
        Some(name)
    }

    fn loop_items(
        &mut self,
        node: &Node,
        path: &str,
        max_iterations: u64,
        ctx: &Ctx,
    ) -> Option<LoopItems> {
        let obj = self.object(node, path, LOOP_ITEMS_FIELDS)?;
        let present: Vec<&str> = LOOP_ITEMS_FIELDS
            .iter()
            .copied()
            .filter(|k| obj.entries.contains_key(k))
            .collect();
        let key = match present.as_slice() {
            [key] => *key,
            _ => {
                self.error(
                    codes::EXACTLY_ONE,
                    path,
                    node.pos,
                    format!(
                        "loop items need exactly one of expression, range, static, found {}",
                        if present.is_empty() {
                            "none".to_owned()
                        } else {
                            present.join(" and ")
                        }
                    ),
                );
                return None;
            }
        };
        let inner_path = obj.field_path(key);
        let Some(inner) = obj.get(key) else {
            self.error(
                codes::MISSING_FIELD,
                &inner_path,
                obj.key_pos(key),
                format!("expected a value for '{key}'"),
            );
            return None;
        };
        match key {
            "expression" => self
                .expression(inner, &inner_path, ctx)
                .map(LoopItems::Expression),
            "range" => {
                let r = self.object(inner, &inner_path, RANGE_FIELDS)?;
                let bound = i64::try_from(schema::INTEGER_ABS_MAX).unwrap_or(i64::MAX);
                // Every bound is checked before giving up on the range.
                let start = self.opt_int(&r, "start", -bound, bound);
                let end = self.opt_int(&r, "end", -bound, bound);
                if start == Ok(None) {
                    self.missing(&r, "start");
                }
                if end == Ok(None) {
                    self.missing(&r, "end");
                }
                let step = self.opt_int(&r, "step", -bound, bound);
                let (start, end, step) = (start.ok()?, end.ok()?, step.ok()?.unwrap_or(1));
                if step == 0 {
                    self.error(
                        codes::OUT_OF_RANGE,
                        r.field_path("step"),
                        r.get("step").map_or(r.pos, |n| n.pos),
                        "range step is 0, expected a non-zero integer".to_owned(),
                    );
                    return None;
                }
                let (start, end) = (start?, end?);
                let count = range_len(start, end, step);
                if count > u128::from(max_iterations) {
                    self.error(
                        codes::MAX_ITERATIONS,
                        inner_path,
                        inner.pos,
                        format!("range has {count} items, expected at most maxIterations ({max_iterations}) (max-iterations)"),
                    );
                    return None;
                }
                Some(LoopItems::Range { start, end, step })
            }
            _ => {
                let Value::Seq(list) = &inner.value else {
                    self.wrong_type(&inner_path, inner, "a sequence");
                    return None;
                };
                if list.len() as u64 > max_iterations {
                    self.error(
                        codes::MAX_ITERATIONS,
                        &inner_path,
                        inner.pos,
                        format!(
                            "static list has {} items, expected at most maxIterations ({max_iterations}) (max-iterations)",
                            list.len()
                        ),
                    );
                    return None;
                }
                match self.json(inner, &inner_path)? {
                    Json::Array(items) => Some(LoopItems::Static(items)),
                    _ => None,
                }
            }
        }
    }

    pub(super) fn conditional(
        &mut self,
        node: &Node,
        path: &str,
        me: usize,
        ctx: &Ctx,
    ) -> Option<ConditionalStep> {
        let obj = self.object(node, path, CONDITIONAL_FIELDS)?;
        let before = self.diags.len();
        let mut branches = Vec::new();
        match obj.get("branches") {
            None => self.missing(&obj, "branches"),
            Some(node) => match &node.value {
                Value::Seq(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        let bpath = format!("{}[{i}]", obj.field_path("branches"));
                        let Some(b) = self.object(item, &bpath, BRANCH_FIELDS) else {
                            continue;
                        };
                        let when = match b.get("when") {
                            None => {
                                self.missing(&b, "when");
                                None
                            }
                            Some(n) => self.condition(n, &b.field_path("when"), ctx),
                        };
                        let list = self.graph.add_list(Some(me), ListKind::Sequential);
                        let steps = self.req_step_list(&b, "steps", list, &ctx.vars);
                        if let (Some(when), Some(steps)) = (when, steps) {
                            branches.push(Branch { when, steps });
                        }
                    }
                }
                Value::Seq(_) => self.error(
                    codes::MISSING_FIELD,
                    obj.field_path("branches"),
                    node.pos,
                    "expected at least one branch".to_owned(),
                ),
                _ => self.wrong_type(&obj.field_path("branches"), node, "a sequence of branches"),
            },
        }
        let else_steps = match obj.get("else") {
            None => Vec::new(),
            Some(node) => {
                let list = self.graph.add_list(Some(me), ListKind::Sequential);
                self.step_list(node, &obj.field_path("else"), list, &ctx.vars)
                    .unwrap_or_default()
            }
        };
        let output_union = self.opt_bool(&obj, "outputUnion").unwrap_or(false);
        (self.diags.len() == before).then_some(ConditionalStep {
            branches,
            else_steps,
            output_union,
        })
    }
}
