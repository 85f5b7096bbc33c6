//! The JMESPath built-in functions: name lookup, arity, argument type checks and
//! implementations.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::ast::Node;
use crate::error::EvalError;
use crate::eval::Evaluator;
use crate::value::{float_value, integral_value, to_f64, type_name};

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Avg,
    Ceil,
    Contains,
    EndsWith,
    Floor,
    Join,
    Keys,
    Length,
    Map,
    Max,
    MaxBy,
    Merge,
    Min,
    MinBy,
    NotNull,
    Reverse,
    Sort,
    SortBy,
    StartsWith,
    Sum,
    ToArray,
    ToString,
    ToNumber,
    Type,
    Values,
}

impl Func {
    /// Looks a function up by name.
    pub(crate) fn lookup(name: &str) -> Option<Func> {
        Some(match name {
            "abs" => Func::Abs,
            "avg" => Func::Avg,
            "ceil" => Func::Ceil,
            "contains" => Func::Contains,
            "ends_with" => Func::EndsWith,
            "floor" => Func::Floor,
            "join" => Func::Join,
            "keys" => Func::Keys,
            "length" => Func::Length,
            "map" => Func::Map,
            "max" => Func::Max,
            "max_by" => Func::MaxBy,
            "merge" => Func::Merge,
            "min" => Func::Min,
            "min_by" => Func::MinBy,
            "not_null" => Func::NotNull,
            "reverse" => Func::Reverse,
            "sort" => Func::Sort,
            "sort_by" => Func::SortBy,
            "starts_with" => Func::StartsWith,
            "sum" => Func::Sum,
            "to_array" => Func::ToArray,
            "to_string" => Func::ToString,
            "to_number" => Func::ToNumber,
            "type" => Func::Type,
            "values" => Func::Values,
            _ => return None,
        })
    }

    /// The function's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Func::Abs => "abs",
            Func::Avg => "avg",
            Func::Ceil => "ceil",
            Func::Contains => "contains",
            Func::EndsWith => "ends_with",
            Func::Floor => "floor",
            Func::Join => "join",
            Func::Keys => "keys",
            Func::Length => "length",
            Func::Map => "map",
            Func::Max => "max",
            Func::MaxBy => "max_by",
            Func::Merge => "merge",
            Func::Min => "min",
            Func::MinBy => "min_by",
            Func::NotNull => "not_null",
            Func::Reverse => "reverse",
            Func::Sort => "sort",
            Func::SortBy => "sort_by",
            Func::StartsWith => "starts_with",
            Func::Sum => "sum",
            Func::ToArray => "to_array",
            Func::ToString => "to_string",
            Func::ToNumber => "to_number",
            Func::Type => "type",
            Func::Values => "values",
        }
    }

    /// `(minimum, maximum)` argument counts; `None` maximum for variadic functions.
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Merge | Func::NotNull => (1, None),
            Func::Contains
            | Func::EndsWith
            | Func::StartsWith
            | Func::Join
            | Func::Map
            | Func::MaxBy
            | Func::MinBy
            | Func::SortBy => (2, Some(2)),
            _ => (1, Some(1)),
        }
    }

    /// Checks an argument count; the error message starts with "wrong number of arguments".
    pub(crate) fn check_arity(self, count: usize) -> Result<(), String> {
        let (min, max) = self.arity();
        let ok = count >= min && max.is_none_or(|m| count <= m);
        if ok {
            return Ok(());
        }
        let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
        let expected = match max {
            Some(m) if m == min => format!("{m} {}", plural(m)),
            Some(m) => format!("{min} to {m} arguments"),
            None => format!("at least {min} {}", plural(min)),
        };
        Err(format!(
            "wrong number of arguments: {}() takes {expected}, got {count}",
            self.name()
        ))
    }
}

/// An evaluated argument.
enum Arg<'a> {
    Value(Cow<'a, Value>),
    Expref(&'a Node),
}

fn type_error(func: Func, position: usize, expected: &str, got: &str) -> EvalError {
    EvalError::InvalidType(format!(
        "{}() argument {position} must be {expected}, got {got}",
        func.name()
    ))
}

fn arg_type(arg: &Arg<'_>) -> &'static str {
    match arg {
        Arg::Value(v) => type_name(v),
        Arg::Expref(_) => "expression reference",
    }
}

/// Calls `func` on `args` (unevaluated argument nodes) with `current` as the current node.
pub(crate) fn call(
    ev: &mut Evaluator,
    func: Func,
    args: &[Node],
    current: &Value,
) -> Result<Value, EvalError> {
    if let Err(message) = func.check_arity(args.len()) {
        return Err(EvalError::InvalidArity(message));
    }
    let mut evaluated: Vec<Arg<'_>> = Vec::with_capacity(args.len());
    for node in args {
        match node {
            Node::Expref(inner) => evaluated.push(Arg::Expref(inner)),
            other => evaluated.push(Arg::Value(ev.eval(other, current)?)),
        }
    }
    dispatch(ev, func, &evaluated)
}

/// Runs a function on evaluated arguments. Kept out of line so the large frame is not on
/// the recursion path of nested argument evaluation.
#[inline(never)]
fn dispatch(ev: &mut Evaluator, func: Func, args: &[Arg<'_>]) -> Result<Value, EvalError> {
    // Typed accessors.
    let value = |i: usize| -> Result<&Value, EvalError> {
        match args.get(i) {
            Some(Arg::Value(v)) => Ok(v.as_ref()),
            Some(other) => Err(type_error(func, i + 1, "a value", arg_type(other))),
            None => Err(EvalError::InvalidArity(format!(
                "{}() is missing argument {}",
                func.name(),
                i + 1
            ))),
        }
    };
    let expref = |i: usize| -> Result<&Node, EvalError> {
        match args.get(i) {
            Some(Arg::Expref(n)) => Ok(n),
            Some(other) => Err(type_error(
                func,
                i + 1,
                "an expression reference",
                arg_type(other),
            )),
            None => Err(EvalError::InvalidArity(format!(
                "{}() is missing argument {}",
                func.name(),
                i + 1
            ))),
        }
    };
    let number = |i: usize| -> Result<&serde_json::Number, EvalError> {
        match value(i)? {
            Value::Number(n) => Ok(n),
            other => Err(type_error(func, i + 1, "a number", type_name(other))),
        }
    };
    let string = |i: usize| -> Result<&str, EvalError> {
        match value(i)? {
            Value::String(s) => Ok(s.as_str()),
            other => Err(type_error(func, i + 1, "a string", type_name(other))),
        }
    };
    let array = |i: usize| -> Result<&Vec<Value>, EvalError> {
        match value(i)? {
            Value::Array(a) => Ok(a),
            other => Err(type_error(func, i + 1, "an array", type_name(other))),
        }
    };
    let object = |i: usize| -> Result<&Map<String, Value>, EvalError> {
        match value(i)? {
            Value::Object(o) => Ok(o),
            other => Err(type_error(func, i + 1, "an object", type_name(other))),
        }
    };

    match func {
        Func::Abs => {
            let n = number(0)?;
            Ok(if let Some(i) = n.as_i64() {
                match i.checked_abs() {
                    Some(a) => Value::from(a),
                    None => Value::from(i.unsigned_abs()),
                }
            } else if n.is_u64() {
                Value::Number(n.clone())
            } else {
                float_value(to_f64(n).abs())
            })
        }
        Func::Avg => {
            let items = array(0)?;
            let nums = number_items(ev, func, items)?;
            if nums.is_empty() {
                return Ok(Value::Null);
            }
            let total: f64 = nums.iter().map(|n| to_f64(n)).sum();
            Ok(float_value(total / nums.len() as f64))
        }
        Func::Ceil | Func::Floor => {
            let n = number(0)?;
            if n.is_f64() {
                let f = to_f64(n);
                Ok(integral_value(if func == Func::Ceil {
                    f.ceil()
                } else {
                    f.floor()
                }))
            } else {
                Ok(Value::Number(n.clone()))
            }
        }
        Func::Contains => {
            let needle = value(1)?;
            match value(0)? {
                Value::Array(items) => {
                    for item in items {
                        if ev.deep_equal(item, needle)? {
                            return Ok(Value::Bool(true));
                        }
                    }
                    Ok(Value::Bool(false))
                }
                Value::String(s) => {
                    ev.tick(1 + s.len() as u64 / 64)?;
                    Ok(Value::Bool(match needle {
                        Value::String(n) => s.contains(n.as_str()),
                        _ => false,
                    }))
                }
                other => Err(type_error(
                    func,
                    1,
                    "an array or a string",
                    type_name(other),
                )),
            }
        }
        Func::EndsWith | Func::StartsWith => {
            let subject = string(0)?;
            let affix = string(1)?;
            Ok(Value::Bool(if func == Func::EndsWith {
                subject.ends_with(affix)
            } else {
                subject.starts_with(affix)
            }))
        }
        Func::Join => {
            let glue = string(0)?;
            let items = array(1)?;
            let mut parts = Vec::with_capacity(items.len());
            let mut size = 0usize;
            for item in items {
                ev.tick(1)?;
                match item {
                    Value::String(s) => {
                        size = size.saturating_add(s.len() + glue.len());
                        ev.check_size(size)?;
                        parts.push(s.as_str());
                    }
                    other => {
                        return Err(type_error(
                            func,
                            2,
                            "an array of strings",
                            &format!("an array containing {}", type_name(other)),
                        ));
                    }
                }
            }
            ev.tick(1 + size as u64 / 64)?;
            Ok(Value::String(parts.join(glue)))
        }
        Func::Keys => {
            let map = object(0)?;
            ev.tick(map.len() as u64)?;
            Ok(Value::Array(
                map.keys().map(|k| Value::String(k.clone())).collect(),
            ))
        }
        Func::Values => {
            let map = object(0)?;
            ev.tick(map.len() as u64)?;
            let whole = value(0)?;
            ev.measure(whole)?;
            Ok(Value::Array(map.values().cloned().collect()))
        }
        Func::Length => match value(0)? {
            Value::String(s) => {
                ev.tick(1 + s.len() as u64 / 64)?;
                Ok(Value::from(s.chars().count()))
            }
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::Object(o) => Ok(Value::from(o.len())),
            other => Err(type_error(
                func,
                1,
                "a string, an array or an object",
                type_name(other),
            )),
        },
        Func::Map => {
            let body = expref(0)?;
            let items = array(1)?;
            let mut out = Vec::with_capacity(items.len());
            let mut size = 2usize;
            for item in items {
                ev.tick(1)?;
                let v = ev.eval(body, item)?;
                size = size.saturating_add(ev.measure(&v)? + 1);
                ev.check_size(size)?;
                out.push(v.into_owned());
            }
            Ok(Value::Array(out))
        }
        Func::Max | Func::Min => {
            let items = array(0)?;
            let keys = sort_keys_of(ev, func, 1, items.iter().map(|v| Ok(Cow::Borrowed(v))))?;
            let want = if func == Func::Max {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            Ok(extreme(&keys, want)
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Value::Null))
        }
        Func::MaxBy | Func::MinBy => {
            let items = array(0)?;
            let body = expref(1)?;
            let mut computed = Vec::with_capacity(items.len());
            for item in items {
                ev.tick(1)?;
                computed.push(ev.eval(body, item)?);
            }
            let keys = sort_keys_of(ev, func, 2, computed.into_iter().map(Ok))?;
            let want = if func == Func::MaxBy {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            let picked = extreme(&keys, want)
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Value::Null);
            ev.measure(&picked)?;
            Ok(picked)
        }
        Func::Merge => {
            let mut out = Map::new();
            let mut size = 2usize;
            for i in 0..args.len() {
                let map = object(i)?;
                for (k, v) in map {
                    ev.tick(1)?;
                    size = size.saturating_add(k.len() + 4 + ev.measure(v)?);
                    ev.check_size(size)?;
                    out.insert(k.clone(), v.clone());
                }
            }
            Ok(Value::Object(out))
        }
        Func::NotNull => {
            for i in 0..args.len() {
                let v = value(i)?;
                if !v.is_null() {
                    return Ok(v.clone());
                }
            }
            Ok(Value::Null)
        }
        Func::Reverse => match value(0)? {
            Value::String(s) => {
                ev.tick(1 + s.len() as u64 / 64)?;
                Ok(Value::String(s.chars().rev().collect()))
            }
            whole @ Value::Array(a) => {
                ev.tick(a.len() as u64)?;
                ev.measure(whole)?;
                Ok(Value::Array(a.iter().rev().cloned().collect()))
            }
            other => Err(type_error(
                func,
                1,
                "an array or a string",
                type_name(other),
            )),
        },
        Func::Sort => {
            let items = array(0)?;
            let keys = sort_keys_of(ev, func, 1, items.iter().map(|v| Ok(Cow::Borrowed(v))))?;
            let order = sorted_order(ev, &keys)?;
            ev.measure(value(0)?)?;
            Ok(Value::Array(
                order
                    .into_iter()
                    .filter_map(|i| items.get(i).cloned())
                    .collect(),
            ))
        }
        Func::SortBy => {
            let items = array(0)?;
            let body = expref(1)?;
            let mut computed = Vec::with_capacity(items.len());
            for item in items {
                ev.tick(1)?;
                computed.push(ev.eval(body, item)?);
            }
            let keys = sort_keys_of(ev, func, 2, computed.into_iter().map(Ok))?;
            let order = sorted_order(ev, &keys)?;
            ev.measure(value(0)?)?;
            Ok(Value::Array(
                order
                    .into_iter()
                    .filter_map(|i| items.get(i).cloned())
                    .collect(),
            ))
        }
        Func::Sum => {
            let items = array(0)?;
            let nums = number_items(ev, func, items)?;
            let mut int_total: Option<i64> = Some(0);
            let mut float_total = 0.0f64;
            for n in &nums {
                float_total += to_f64(n);
                int_total = match (int_total, n.as_i64()) {
                    (Some(t), Some(x)) if !n.is_f64() => t.checked_add(x),
                    _ => None,
                };
            }
            Ok(match int_total {
                Some(t) => Value::from(t),
                None => float_value(float_total),
            })
        }
        Func::ToArray => {
            let v = value(0)?;
            Ok(match v {
                Value::Array(_) => v.clone(),
                other => Value::Array(vec![other.clone()]),
            })
        }
        Func::ToString => {
            let v = value(0)?;
            match v {
                Value::String(s) => Ok(Value::String(s.clone())),
                other => {
                    ev.measure(other)?;
                    if json_depth(other) > 512 {
                        return Err(EvalError::TooDeep(512));
                    }
                    Ok(Value::String(other.to_string()))
                }
            }
        }
        Func::ToNumber => {
            let v = value(0)?;
            Ok(match v {
                Value::Number(_) => v.clone(),
                Value::String(s) => parse_number(s),
                _ => Value::Null,
            })
        }
        Func::Type => Ok(Value::String(type_name(value(0)?).to_owned())),
    }
}

/// The elements of an array that must all be numbers.
fn number_items<'v>(
    ev: &mut Evaluator,
    func: Func,
    items: &'v [Value],
) -> Result<Vec<&'v serde_json::Number>, EvalError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        ev.tick(1)?;
        match item {
            Value::Number(n) => out.push(n),
            other => {
                return Err(type_error(
                    func,
                    1,
                    "an array of numbers",
                    &format!("an array containing {}", type_name(other)),
                ));
            }
        }
    }
    Ok(out)
}

/// A sortable key: all keys of one call are numbers, or all are strings.
enum SortKey<'a> {
    Num(serde_json::Number),
    Str(Cow<'a, str>),
}

fn compare_keys(a: &SortKey<'_>, b: &SortKey<'_>) -> Ordering {
    match (a, b) {
        (SortKey::Num(x), SortKey::Num(y)) => to_f64(x).total_cmp(&to_f64(y)),
        (SortKey::Str(x), SortKey::Str(y)) => x.cmp(y),
        (SortKey::Num(_), SortKey::Str(_)) => Ordering::Less,
        (SortKey::Str(_), SortKey::Num(_)) => Ordering::Greater,
    }
}

/// Collects sort keys, checking they are all numbers or all strings.
fn sort_keys_of<'a>(
    ev: &mut Evaluator,
    func: Func,
    position: usize,
    values: impl Iterator<Item = Result<Cow<'a, Value>, EvalError>>,
) -> Result<Vec<SortKey<'a>>, EvalError> {
    let mut keys = Vec::new();
    let mut kind: Option<&'static str> = None;
    let expected = if matches!(func, Func::MaxBy | Func::MinBy | Func::SortBy) {
        "an expression returning only numbers or only strings"
    } else {
        "an array of only numbers or only strings"
    };
    for v in values {
        ev.tick(1)?;
        let v = v?;
        let this = type_name(&v);
        let key = match v {
            Cow::Borrowed(Value::Number(n)) => SortKey::Num(n.clone()),
            Cow::Owned(Value::Number(n)) => SortKey::Num(n),
            Cow::Borrowed(Value::String(s)) => SortKey::Str(Cow::Borrowed(s.as_str())),
            Cow::Owned(Value::String(s)) => SortKey::Str(Cow::Owned(s)),
            _ => return Err(type_error(func, position, expected, &format!("a {this}"))),
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(type_error(
                    func,
                    position,
                    expected,
                    &format!("a mix of {k} and {this}"),
                ));
            }
            Some(_) => {}
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Index of the first maximal (`Greater`) or minimal (`Less`) key.
fn extreme(keys: &[SortKey<'_>], want: Ordering) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, key) in keys.iter().enumerate() {
        best = match best {
            None => Some(i),
            Some(b) => {
                if keys.get(b).is_some_and(|bk| compare_keys(key, bk) == want) {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// Stable sort order of the keys (indices).
fn sorted_order(ev: &mut Evaluator, keys: &[SortKey<'_>]) -> Result<Vec<usize>, EvalError> {
    let n = keys.len() as u64;
    let log = 64 - n.leading_zeros() as u64;
    ev.tick(n.saturating_mul(log + 1))?;
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| match (keys.get(a), keys.get(b)) {
        (Some(x), Some(y)) => compare_keys(x, y),
        _ => Ordering::Equal,
    });
    Ok(order)
}

/// `to_number` on a string: an integer if it parses as one, else a float, else `null`.
fn parse_number(s: &str) -> Value {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    let valid = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !valid {
        return Value::Null;
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => float_value(f),
        _ => Value::Null,
    }
}

/// Nesting depth of a value, computed iteratively.
fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}
