//! What steps and the run produce: parallel/map/loop aggregation, the conditional
//! `outputUnion`, and the pack outputs captured when the run finishes.

use serde_json::{Map, Value};
use taskrunner_plan::{Aggregation, PlanOutput, PlanStep, PlanStepKind, PlanValue};

use super::Cx;
use crate::event::{Command, OutputResult, RunStatus};

impl<'a> Cx<'a> {
    pub(super) fn finish_outputs(&mut self, status: RunStatus) {
        let ctx = self.context(None);
        let outputs: Vec<OutputResult> = self
            .plan
            .outputs()
            .iter()
            .map(|o| match o {
                PlanOutput::Object {
                    name,
                    expression,
                    value,
                } => {
                    let result = match value {
                        Some(v) => Ok(v.clone()),
                        None => expression.evaluate(&ctx).map_err(|e| e.to_string()),
                    };
                    match result {
                        Ok(v) => OutputResult::Object {
                            name: name.clone(),
                            value: Some(self.secrets.mask_value(&v)),
                            error: None,
                        },
                        Err(e) => OutputResult::Object {
                            name: name.clone(),
                            value: None,
                            error: Some(self.secrets.mask(&e)),
                        },
                    }
                }
                PlanOutput::File { name, path, .. } => {
                    let result =
                        path.resolve(&ctx)
                            .map_err(|e| e.to_string())
                            .and_then(|v| match v {
                                Value::String(s) => workspace_path(&s),
                                other => Err(format!("path is not a string: {other}")),
                            });
                    match result {
                        Ok(p) => OutputResult::File {
                            name: name.clone(),
                            path: Some(self.secrets.mask(&p)),
                            error: None,
                        },
                        Err(e) => OutputResult::File {
                            name: name.clone(),
                            path: None,
                            error: Some(self.secrets.mask(&e)),
                        },
                    }
                }
                other => OutputResult::Object {
                    name: other.name().to_owned(),
                    value: None,
                    error: Some("unsupported output type".to_owned()),
                },
            })
            .collect();
        self.st.outputs = Some(outputs.clone());
        self.cmds.push(Command::Finished { status, outputs });
    }

    pub(super) fn aggregate_parallel(&self, i: usize) -> Value {
        let n = &self.st.nodes[i];
        let is_map = self
            .def(i)
            .is_some_and(|d| matches!(d.kind, PlanStepKind::Map { .. }));
        if is_map {
            Value::Array(
                n.children
                    .iter()
                    .map(|&k| self.st.nodes[k].outputs.clone().unwrap_or(Value::Null))
                    .collect(),
            )
        } else {
            Value::Object(
                n.children
                    .iter()
                    .map(|&k| {
                        let c = &self.st.nodes[k];
                        (
                            c.template_id.clone(),
                            c.outputs.clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            )
        }
    }

    /// An iteration's outputs are those of its last step (rule 11); only iterations that ran.
    pub(super) fn aggregate_loop(
        &self,
        i: usize,
        body_len: usize,
        aggregation: Aggregation,
    ) -> Option<Value> {
        let n = &self.st.nodes[i];
        let ran = n.cursor.min(n.children.len().div_ceil(body_len));
        let outs: Vec<Value> = (0..ran)
            .map(|it| {
                let last = ((it + 1) * body_len).min(n.children.len()) - 1;
                self.st.nodes[n.children[last]]
                    .outputs
                    .clone()
                    .unwrap_or(Value::Null)
            })
            .collect();
        Some(match aggregation {
            Aggregation::Collect => Value::Array(outs),
            Aggregation::Merge => {
                let mut merged = Map::new();
                for o in outs {
                    if let Value::Object(m) = o {
                        merged.extend(m);
                    }
                }
                Value::Object(merged)
            }
            Aggregation::First => outs.into_iter().next().unwrap_or(Value::Null),
            Aggregation::Last => outs.into_iter().last().unwrap_or(Value::Null),
            Aggregation::None => return None,
        })
    }
}

/// A conditional's outputs with `outputUnion: true` (SPEC §8 rule 11).
///
/// The keys a branch "can produce" are only partly known before it runs, so the engine uses
/// this rule: the result holds
/// - every key of the outputs the taken branch actually produced (its last step's outputs,
///   values as produced), and
/// - for every other branch (`else` included), the keys of its last step's `with` object when
///   that step is a `run` with `uses: builtin:noop` (whose outputs are its `with`); literal and
///   run-time members count alike, since the keys are known in the plan either way. A branch
///   whose last step is anything else (another executor, a gate, a container) or which has no
///   steps contributes no keys.
///
/// Keys only another branch could produce are `null`. The result is always an object (empty
/// when no key is known), even when the taken branch produced nothing (its last step skipped,
/// or a gate) or produced a non-object.
pub(super) fn union_outputs(
    def: &PlanStep,
    ranges: &[(usize, usize)],
    chosen: usize,
    taken: Option<Value>,
) -> Value {
    let mut out = match taken {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (b, &(from, to)) in ranges.iter().enumerate() {
        if b == chosen || to <= from {
            continue;
        }
        let Some(last) = def.children.get(to - 1) else {
            continue;
        };
        let PlanStepKind::Run { uses, with } = &last.kind else {
            continue;
        };
        if uses != "builtin:noop" {
            continue;
        }
        let keys: Vec<&String> = match with {
            PlanValue::Literal(Value::Object(m)) => m.keys().collect(),
            PlanValue::Object(m) => m.keys().collect(),
            _ => Vec::new(),
        };
        for k in keys {
            if !out.contains_key(k) {
                out.insert(k.clone(), Value::Null);
            }
        }
    }
    Value::Object(out)
}

/// A workspace-relative path: no absolute paths, drive letters or `..` (SPEC §5.6).
pub(super) fn workspace_path(path: &str) -> Result<String, String> {
    let escapes = || "path escapes the workspace".to_owned();
    if path.is_empty() {
        return Err("path is empty".to_owned());
    }
    if path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        return Err(escapes());
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(escapes());
    }
    let mut parts = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(escapes()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("path names the workspace itself".to_owned());
    }
    Ok(parts.join("/"))
}
