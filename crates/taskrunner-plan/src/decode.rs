//! `taskrunner.plan/v1` JSON → [`Plan`]: the inverse of `encode.rs`, for plans read back from
//! storage. Decoding re-encodes the result and requires the same canonical bytes (and hash, when
//! one is given), so a persisted plan is checked again at the seam where it re-enters memory.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use taskrunner_expr::Expression;

use crate::encode::plan_to_json;
use crate::jcs;
use crate::model::*;
use crate::planner::hash_bytes;
use crate::value::{PlanValue, TemplatePiece};

/// Why a stored plan could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("plan is not valid JSON: {0}")]
    Json(String),
    #[error("plan member {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("plan does not re-encode to the same canonical bytes")]
    NotCanonical,
    #[error("plan hash mismatch: expected {expected}, computed {actual}")]
    HashMismatch { expected: String, actual: String },
}

fn invalid(path: &str, message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

struct Reader<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Reader<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Self, DecodeError> {
        value
            .as_object()
            .map(|map| Reader {
                map,
                path: path.to_owned(),
            })
            .ok_or_else(|| invalid(path, "expected an object"))
    }
    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
    fn get(&self, key: &str) -> Result<&'a Value, DecodeError> {
        self.map
            .get(key)
            .ok_or_else(|| invalid(&self.at(key), "missing"))
    }
    fn str(&self, key: &str) -> Result<String, DecodeError> {
        self.get(key)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| invalid(&self.at(key), "expected a string"))
    }
    fn opt_str(&self, key: &str) -> Result<Option<String>, DecodeError> {
        self.map.get(key).map(|_| self.str(key)).transpose()
    }
    fn u64(&self, key: &str) -> Result<u64, DecodeError> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| invalid(&self.at(key), "expected a non-negative integer"))
    }
    fn opt_u64(&self, key: &str) -> Result<Option<u64>, DecodeError> {
        self.map.get(key).map(|_| self.u64(key)).transpose()
    }
    fn u32(&self, key: &str) -> Result<u32, DecodeError> {
        u32::try_from(self.u64(key)?).map_err(|_| invalid(&self.at(key), "out of range"))
    }
    fn opt_u32(&self, key: &str) -> Result<Option<u32>, DecodeError> {
        self.map.get(key).map(|_| self.u32(key)).transpose()
    }
    fn i64(&self, key: &str) -> Result<i64, DecodeError> {
        self.get(key)?
            .as_i64()
            .ok_or_else(|| invalid(&self.at(key), "expected an integer"))
    }
    fn bool(&self, key: &str) -> Result<bool, DecodeError> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| invalid(&self.at(key), "expected a boolean"))
    }
    fn usize(&self, key: &str) -> Result<usize, DecodeError> {
        usize::try_from(self.u64(key)?).map_err(|_| invalid(&self.at(key), "out of range"))
    }
    fn array(&self, key: &str) -> Result<&'a Vec<Value>, DecodeError> {
        self.get(key)?
            .as_array()
            .ok_or_else(|| invalid(&self.at(key), "expected an array"))
    }
    fn strings(&self, key: &str) -> Result<Vec<String>, DecodeError> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(&self.at(key), "expected strings"))
            })
            .collect()
    }
    fn expr(&self, key: &str) -> Result<Expression, DecodeError> {
        let source = self.str(key)?;
        Expression::parse(&source).map_err(|e| invalid(&self.at(key), e.to_string()))
    }
}

/// Reads a plan document; `expected_hash`, when given, must equal the recomputed hash.
pub(crate) fn decode(text: &str, expected_hash: Option<&str>) -> Result<Plan, DecodeError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let r = Reader::new(&doc, "plan")?;
    let schema = r.str("schema")?;
    if schema != PLAN_SCHEMA {
        return Err(invalid(
            "plan.schema",
            format!("expected {PLAN_SCHEMA}, found {schema}"),
        ));
    }
    let pack = Reader::new(r.get("pack")?, "plan.pack")?;
    let failure = Reader::new(r.get("failure")?, "plan.failure")?;
    let sandbox = Reader::new(r.get("sandbox")?, "plan.sandbox")?;
    let slo = Reader::new(r.get("slo")?, "plan.slo")?;
    let mode = match sandbox.str("mode")?.as_str() {
        "sealed" => SandboxMode::Sealed,
        "networked" => SandboxMode::Networked,
        other => {
            return Err(invalid(
                "plan.sandbox.mode",
                format!("unknown mode {other}"),
            ));
        }
    };
    let inputs = r
        .get("inputs")?
        .as_object()
        .ok_or_else(|| invalid("plan.inputs", "expected an object"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), literal(v, &format!("plan.inputs.{k}"))?)))
        .collect::<Result<BTreeMap<_, _>, DecodeError>>()?;
    let mut plan = Plan {
        pack: PackRef {
            name: pack.str("name")?,
            version: pack.str("version")?,
        },
        inputs,
        secrets: r
            .array("secrets")?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = Reader::new(s, &format!("plan.secrets[{i}]"))?;
                Ok(PlanSecret {
                    name: s.str("name")?,
                    required: s.bool("required")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        failure: FailureDefaults {
            max_attempts: failure.u32("maxAttempts")?,
            backoff_seconds: failure.u64("backoffSeconds")?,
            continue_on_error: failure.bool("continueOnError")?,
        },
        sandbox: PlanSandbox {
            mode,
            egress_allowlist: sandbox.strings("egressAllowlist")?,
            cpu_limit_millicores: sandbox.opt_u64("cpuLimitMillicores")?,
            memory_limit_mib: sandbox.opt_u64("memoryLimitMiB")?,
            quota_seconds: sandbox.opt_u64("quotaSeconds")?,
        },
        slo: PlanSlo {
            run_p95_seconds: slo.opt_u64("runP95Seconds")?,
            approval_p95_seconds: slo.opt_u64("approvalP95Seconds")?,
            max_queue_depth: slo.opt_u64("maxQueueDepth")?,
        },
        approvals: r
            .array("approvals")?
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = Reader::new(a, &format!("plan.approvals[{i}]"))?;
                Ok(PlanApproval {
                    id: a.str("id")?,
                    grants: a.strings("grants")?,
                    required_approvals: a.u32("requiredApprovals")?,
                    expires_after_seconds: a.opt_u64("expiresAfterSeconds")?,
                    reason_template: a.opt_str("reasonTemplate")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        policies: r
            .array("policies")?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = Reader::new(p, &format!("plan.policies[{i}]"))?;
                Ok(PlanPolicy {
                    id: p.str("id")?,
                    version: p.str("version")?,
                    rule: p.expr("rule")?,
                    message: p.opt_str("message")?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        steps: steps(r.array("steps")?, "plan.steps")?,
        outputs: r
            .array("outputs")?
            .iter()
            .enumerate()
            .map(|(i, o)| output(o, &format!("plan.outputs[{i}]")))
            .collect::<Result<_, DecodeError>>()?,
        canonical: String::new(),
        hash: String::new(),
    };
    let canonical = jcs::to_canonical(&plan_to_json(&plan));
    if canonical != jcs::to_canonical(&doc) {
        return Err(DecodeError::NotCanonical);
    }
    let hash = hash_bytes(canonical.as_bytes());
    if let Some(expected) = expected_hash
        && expected != hash
    {
        return Err(DecodeError::HashMismatch {
            expected: expected.to_owned(),
            actual: hash,
        });
    }
    plan.canonical = canonical;
    plan.hash = hash;
    Ok(plan)
}

fn output(v: &Value, path: &str) -> Result<PlanOutput, DecodeError> {
    let o = Reader::new(v, path)?;
    match o.str("type")?.as_str() {
        "file" => {
            let planned = plan_value(o.get("path")?, &o.at("path"))?;
            // The template text as written is not hashed; rebuild a faithful display of it.
            let source = planned.display();
            Ok(PlanOutput::File {
                name: o.str("name")?,
                source,
                path: planned,
            })
        }
        "object" => Ok(PlanOutput::Object {
            name: o.str("name")?,
            expression: o.expr("expression")?,
            value: o
                .map
                .get("value")
                .map(|v| literal(v, &o.at("value")))
                .transpose()?,
        }),
        other => Err(invalid(
            &o.at("type"),
            format!("unknown output type {other}"),
        )),
    }
}

fn steps(list: &[Value], path: &str) -> Result<Vec<PlanStep>, DecodeError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| step(s, &format!("{path}[{i}]")))
        .collect()
}

fn iterations(s: &Reader<'_>) -> Result<Iterations, DecodeError> {
    if s.bool("expanded")? {
        Ok(Iterations::Expanded {
            items: s
                .array("iterations")?
                .iter()
                .map(|v| literal(v, &s.at("iterations")))
                .collect::<Result<_, _>>()?,
        })
    } else {
        Ok(Iterations::Runtime)
    }
}

fn step(v: &Value, path: &str) -> Result<PlanStep, DecodeError> {
    let s = Reader::new(v, path)?;
    let retries = match s.map.get("retries") {
        Some(r) => {
            let r = Reader::new(r, &s.at("retries"))?;
            Retries {
                max_attempts: r.u32("maxAttempts")?,
                backoff_seconds: r.u64("backoffSeconds")?,
            }
        }
        None => Retries {
            max_attempts: 1,
            backoff_seconds: 0,
        },
    };
    let kind = match s.str("kind")?.as_str() {
        "Run" => PlanStepKind::Run {
            uses: s.str("uses")?,
            with: plan_value(s.get("with")?, &s.at("with"))?,
        },
        "GateApproval" => PlanStepKind::GateApproval {
            approval_id: s.str("approvalId")?,
            message: s
                .map
                .get("message")
                .map(|m| plan_value(m, &s.at("message")))
                .transpose()?,
        },
        "GatePolicy" => PlanStepKind::GatePolicy {
            policy_id: s.str("policyId")?,
            failure_action: match s.str("failureAction")?.as_str() {
                "abort" => FailureAction::Abort,
                "warn" => FailureAction::Warn,
                "requestOverride" => FailureAction::RequestOverride,
                "branch" => FailureAction::Branch,
                other => {
                    return Err(invalid(
                        &s.at("failureAction"),
                        format!("unknown action {other}"),
                    ));
                }
            },
            override_approval: s.opt_str("overrideApproval")?,
            retry_count: s.u32("retryCount")?,
        },
        "Parallel" => PlanStepKind::Parallel {
            max_parallel: s.opt_u32("maxParallel")?,
        },
        "Map" => PlanStepKind::Map {
            items: s.expr("items")?,
            max_parallel: s.u32("maxParallel")?,
            iterations: iterations(&s)?,
            body_len: s.usize("bodySize")?,
        },
        "Loop" => {
            let items = Reader::new(s.get("items")?, &s.at("items"))?;
            let source = if items.map.contains_key("expression") {
                LoopSource::Expression(items.expr("expression")?)
            } else if let Some(range) = items.map.get("range") {
                let range = Reader::new(range, &items.at("range"))?;
                LoopSource::Range {
                    start: range.i64("start")?,
                    end: range.i64("end")?,
                    step: range.i64("step")?,
                }
            } else {
                LoopSource::Static(
                    items
                        .array("static")?
                        .iter()
                        .map(|v| literal(v, &items.at("static")))
                        .collect::<Result<_, _>>()?,
                )
            };
            PlanStepKind::Loop {
                source,
                iterator: s.str("iterator")?,
                index: s.str("index")?,
                max_iterations: s.u64("maxIterations")?,
                until: s.map.get("until").map(|_| s.expr("until")).transpose()?,
                aggregation: match s.str("aggregation")?.as_str() {
                    "collect" => Aggregation::Collect,
                    "merge" => Aggregation::Merge,
                    "last" => Aggregation::Last,
                    "first" => Aggregation::First,
                    "none" => Aggregation::None,
                    other => {
                        return Err(invalid(
                            &s.at("aggregation"),
                            format!("unknown aggregation {other}"),
                        ));
                    }
                },
                iterations: iterations(&s)?,
                body_len: s.usize("bodySize")?,
            }
        }
        "Conditional" => PlanStepKind::Conditional {
            branches: s
                .array("branches")?
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let b = Reader::new(b, &format!("{}[{i}]", s.at("branches")))?;
                    Ok(PlanBranch {
                        when: b.expr("when")?,
                        step_count: b.usize("stepCount")?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            else_step_count: s.usize("elseStepCount")?,
            output_union: s.bool("outputUnion")?,
            taken: s
                .map
                .get("branchTaken")
                .map(|_| s.usize("branchTaken"))
                .transpose()?,
        },
        other => return Err(invalid(&s.at("kind"), format!("unknown kind {other}"))),
    };
    Ok(PlanStep {
        id: s.str("id")?,
        template_id: s.str("templateId")?,
        name: s.opt_str("name")?,
        enabled: s.bool("enabled")?,
        status_reason: s.opt_str("statusReason")?,
        when: s.map.get("when").map(|_| s.expr("when")).transpose()?,
        continue_on_error: s.bool("continueOnError")?,
        retries,
        timeout_seconds: s.opt_u64("timeoutSeconds")?,
        kind,
        children: steps(s.array("children")?, &s.at("children"))?,
    })
}

/// A literal position: unwraps `$literal`.
fn literal(v: &Value, path: &str) -> Result<Value, DecodeError> {
    match plan_value(v, path)? {
        PlanValue::Literal(v) => Ok(v),
        _ => Err(invalid(path, "expected a literal value")),
    }
}

fn plan_value(v: &Value, path: &str) -> Result<PlanValue, DecodeError> {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$literal") => Ok(PlanValue::Literal(
            m.get("$literal").cloned().unwrap_or(Value::Null),
        )),
        Value::Object(m) if m.len() == 1 && m.contains_key("$expr") => {
            let source = m
                .get("$expr")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(path, "$expr must be a string"))?;
            Expression::parse(source)
                .map(PlanValue::Expr)
                .map_err(|e| invalid(path, e.to_string()))
        }
        Value::Object(m) if m.len() == 1 && m.contains_key("$template") => {
            let parts = m
                .get("$template")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(path, "$template must be an array"))?;
            let pieces = parts
                .iter()
                .map(|p| match p {
                    Value::String(t) => Ok(TemplatePiece::Text(t.clone())),
                    other => match plan_value(other, path)? {
                        PlanValue::Expr(e) => Ok(TemplatePiece::Expr(e)),
                        _ => Err(invalid(path, "template parts are strings or $expr nodes")),
                    },
                })
                .collect::<Result<_, _>>()?;
            Ok(PlanValue::Template(pieces))
        }
        Value::Object(m) => {
            let mut members = BTreeMap::new();
            for (k, item) in m {
                if k.starts_with('$') && !k.starts_with("$$") {
                    return Err(invalid(path, format!("unexpected symbolic key {k}")));
                }
                let key = k
                    .strip_prefix('$')
                    .filter(|_| k.starts_with("$$"))
                    .unwrap_or(k);
                members.insert(key.to_owned(), plan_value(item, &format!("{path}.{key}"))?);
            }
            Ok(PlanValue::object(members))
        }
        Value::Array(items) => Ok(PlanValue::array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| plan_value(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(PlanValue::Literal(other.clone())),
    }
}
