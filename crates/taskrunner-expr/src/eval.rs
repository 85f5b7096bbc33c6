//! The tree-walking evaluator, with its budget: fuel, recursion depth and result size.
//!
//! Values are borrowed from the input wherever possible (`Cow`), so a plain field chain
//! such as `inputs.target` costs one clone of the selected value.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::ast::{CmpOp, Node};
use crate::error::EvalError;
use crate::functions;
use crate::limits::Limits;
use crate::value::{compare_numbers, is_truthy, numbers_equal};

const NULL: &Value = &Value::Null;

/// Element `i` of an array (negative counts from the end), else `null`.
fn index(current: &Value, i: i64) -> &Value {
    match current {
        Value::Array(items) => {
            let len = items.len() as i64;
            let idx = if i < 0 { len.saturating_add(i) } else { i };
            if idx < 0 {
                NULL
            } else {
                items.get(idx as usize).unwrap_or(NULL)
            }
        }
        _ => NULL,
    }
}

/// Evaluates `node` against `context` within `limits`.
pub(crate) fn evaluate(node: &Node, context: &Value, limits: &Limits) -> Result<Value, EvalError> {
    let mut ev = Evaluator::new(limits);
    let result = ev.eval(node, context)?;
    Ok(result.into_owned())
}

/// Evaluation state: remaining fuel and current recursion depth.
#[derive(Debug)]
pub(crate) struct Evaluator {
    fuel_total: u64,
    fuel_left: u64,
    depth: usize,
    depth_max: usize,
    size_max: usize,
}

impl Evaluator {
    pub(crate) fn new(limits: &Limits) -> Evaluator {
        Evaluator {
            fuel_total: limits.fuel,
            fuel_left: limits.fuel,
            depth: 0,
            depth_max: limits.depth_max,
            size_max: limits.result_bytes_max,
        }
    }

    /// Consumes `n` units of fuel.
    pub(crate) fn tick(&mut self, n: u64) -> Result<(), EvalError> {
        if self.fuel_left < n {
            self.fuel_left = 0;
            return Err(EvalError::FuelExhausted(self.fuel_total));
        }
        self.fuel_left -= n;
        Ok(())
    }

    pub(crate) fn too_large(&self) -> EvalError {
        EvalError::ResultTooLarge(self.size_max)
    }

    /// Checks an accumulated size against the limit.
    pub(crate) fn check_size(&self, size: usize) -> Result<(), EvalError> {
        if size > self.size_max {
            Err(self.too_large())
        } else {
            Ok(())
        }
    }

    /// Approximate serialized size of `value`, walking it iteratively and charging fuel for
    /// the walk; fails once the size passes the limit.
    pub(crate) fn measure(&mut self, value: &Value) -> Result<usize, EvalError> {
        match value {
            Value::Null | Value::Bool(_) => return Ok(5),
            Value::Number(_) => return Ok(8),
            Value::String(s) => {
                let size = s.len() + 2;
                self.check_size(size)?;
                return Ok(size);
            }
            _ => {}
        }
        let mut size = 0usize;
        let mut nodes = 0u64;
        let mut stack: Vec<&Value> = vec![value];
        while let Some(v) = stack.pop() {
            nodes += 1;
            if nodes.is_multiple_of(64) {
                self.tick(16)?;
            }
            size = size.saturating_add(match v {
                Value::Null | Value::Bool(_) => 5,
                Value::Number(_) => 8,
                Value::String(s) => s.len() + 2,
                Value::Array(a) => {
                    stack.extend(a.iter());
                    2 + a.len()
                }
                Value::Object(o) => {
                    for (k, item) in o {
                        size = size.saturating_add(k.len() + 3);
                        stack.push(item);
                    }
                    2 + o.len()
                }
            });
            self.check_size(size)?;
        }
        self.tick(1 + nodes / 4)?;
        Ok(size)
    }

    /// Deep JSON equality with numeric comparison of numbers (`1 == 1.0`), iterative and
    /// charged to fuel.
    pub(crate) fn deep_equal(&mut self, a: &Value, b: &Value) -> Result<bool, EvalError> {
        let mut stack: Vec<(&Value, &Value)> = vec![(a, b)];
        while let Some((x, y)) = stack.pop() {
            self.tick(1)?;
            let same = match (x, y) {
                (Value::Null, Value::Null) => true,
                (Value::Bool(p), Value::Bool(q)) => p == q,
                (Value::Number(p), Value::Number(q)) => numbers_equal(p, q),
                (Value::String(p), Value::String(q)) => p == q,
                (Value::Array(p), Value::Array(q)) => {
                    if p.len() != q.len() {
                        false
                    } else {
                        stack.extend(p.iter().zip(q.iter()));
                        true
                    }
                }
                (Value::Object(p), Value::Object(q)) => {
                    if p.len() != q.len() {
                        false
                    } else {
                        let mut ok = true;
                        for (k, pv) in p {
                            match q.get(k) {
                                Some(qv) => stack.push((pv, qv)),
                                None => {
                                    ok = false;
                                    break;
                                }
                            }
                        }
                        ok
                    }
                }
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evaluates `node` with `current` as the current node.
    pub(crate) fn eval<'a>(
        &mut self,
        node: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        self.tick(1)?;
        if self.depth >= self.depth_max {
            return Err(EvalError::TooDeep(self.depth_max));
        }
        self.depth += 1;
        let result = self.eval_node(node, current);
        self.depth -= 1;
        result
    }

    /// Evaluates `node` against an intermediate value, keeping borrows where possible.
    fn eval_cow<'a>(
        &mut self,
        node: &'a Node,
        current: Cow<'a, Value>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match current {
            Cow::Borrowed(v) => self.eval(node, v),
            Cow::Owned(v) => {
                // Cheap moves out of owned intermediates for the common field/index steps.
                match (node, v) {
                    (Node::Field(name), Value::Object(mut map)) => {
                        self.tick(1)?;
                        Ok(Cow::Owned(map.remove(name.as_str()).unwrap_or(Value::Null)))
                    }
                    (node, v) => Ok(Cow::Owned(self.eval(node, &v)?.into_owned())),
                }
            }
        }
    }

    fn eval_node<'a>(
        &mut self,
        node: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        // Heavy arms live in out-of-line helpers to keep this frame (which is on every
        // recursion path) small, even in debug builds.
        match node {
            Node::Identity => Ok(Cow::Borrowed(current)),
            Node::Field(name) => Ok(Cow::Borrowed(match current {
                Value::Object(map) => map.get(name.as_str()).unwrap_or(NULL),
                _ => NULL,
            })),
            Node::Index(i) => Ok(Cow::Borrowed(index(current, *i))),
            Node::Slice { start, stop, step } => self.slice(current, *start, *stop, *step),
            Node::Literal(v) => Ok(Cow::Borrowed(v)),
            Node::Subexpr(items) => {
                let mut acc: Cow<'a, Value> = Cow::Borrowed(current);
                for item in items {
                    acc = self.eval_cow(item, acc)?;
                }
                Ok(acc)
            }
            Node::Projection { lhs, rhs } => self.list_projection(lhs, rhs, current),
            Node::ValueProjection { lhs, rhs } => self.value_projection(lhs, rhs, current),
            Node::FilterProjection { lhs, cond, rhs } => {
                self.filter_projection(lhs, cond, rhs, current)
            }
            Node::Flatten(inner) => self.flatten(inner, current),
            Node::Compare { op, lhs, rhs } => self.compare(*op, lhs, rhs, current),
            Node::Or(lhs, rhs) => {
                let left = self.eval(lhs, current)?;
                if is_truthy(&left) {
                    Ok(left)
                } else {
                    self.eval(rhs, current)
                }
            }
            Node::And(lhs, rhs) => {
                let left = self.eval(lhs, current)?;
                if is_truthy(&left) {
                    self.eval(rhs, current)
                } else {
                    Ok(left)
                }
            }
            Node::Not(inner) => {
                let truthy = is_truthy(self.eval(inner, current)?.as_ref());
                Ok(Cow::Owned(Value::Bool(!truthy)))
            }
            Node::Pipe(lhs, rhs) => {
                let left = self.eval(lhs, current)?;
                self.eval_cow(rhs, left)
            }
            Node::MultiList(items) => self.multi_list(items, current),
            Node::MultiHash(pairs) => self.multi_hash(pairs, current),
            Node::Function { func, args } => {
                functions::call(self, *func, args, current).map(Cow::Owned)
            }
            Node::Expref(_) => Err(EvalError::InvalidType(
                "an expression reference ('&...') can only be a function argument".to_owned(),
            )),
        }
    }

    #[inline(never)]
    fn slice<'a>(
        &mut self,
        current: &'a Value,
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(EvalError::InvalidValue("slice step cannot be 0".to_owned()));
        }
        let Value::Array(items) = current else {
            return Ok(Cow::Borrowed(NULL));
        };
        let picked = slice_indices(items.len(), start, stop, step);
        let mut out = Vec::with_capacity(picked.len());
        let mut size = 2usize;
        for idx in picked {
            self.tick(1)?;
            if let Some(v) = items.get(idx) {
                size = size.saturating_add(self.measure(v)? + 1);
                self.check_size(size)?;
                out.push(v.clone());
            }
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    #[inline(never)]
    fn list_projection<'a>(
        &mut self,
        lhs: &'a Node,
        rhs: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match self.eval(lhs, current)? {
            Cow::Borrowed(Value::Array(items)) => self.project(items.iter(), rhs).map(Cow::Owned),
            Cow::Owned(Value::Array(items)) => self.project(items.iter(), rhs).map(Cow::Owned),
            _ => Ok(Cow::Borrowed(NULL)),
        }
    }

    #[inline(never)]
    fn value_projection<'a>(
        &mut self,
        lhs: &'a Node,
        rhs: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match self.eval(lhs, current)? {
            Cow::Borrowed(Value::Object(map)) => self.project(map.values(), rhs).map(Cow::Owned),
            Cow::Owned(Value::Object(map)) => self.project(map.values(), rhs).map(Cow::Owned),
            _ => Ok(Cow::Borrowed(NULL)),
        }
    }

    #[inline(never)]
    fn filter_projection<'a>(
        &mut self,
        lhs: &'a Node,
        cond: &'a Node,
        rhs: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match self.eval(lhs, current)? {
            Cow::Borrowed(Value::Array(items)) => self.filter(items, cond, rhs).map(Cow::Owned),
            Cow::Owned(Value::Array(items)) => self.filter(&items, cond, rhs).map(Cow::Owned),
            _ => Ok(Cow::Borrowed(NULL)),
        }
    }

    #[inline(never)]
    fn flatten<'a>(
        &mut self,
        inner: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        let base = self.eval(inner, current)?;
        let Value::Array(items) = base.as_ref() else {
            return Ok(Cow::Borrowed(NULL));
        };
        let mut out = Vec::with_capacity(items.len());
        let mut size = 2usize;
        for item in items {
            self.tick(1)?;
            let pieces: &[Value] = match item {
                Value::Array(inner) => inner,
                other => std::slice::from_ref(other),
            };
            for v in pieces {
                self.tick(1)?;
                size = size.saturating_add(self.measure(v)? + 1);
                self.check_size(size)?;
                out.push(v.clone());
            }
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    #[inline(never)]
    fn compare<'a>(
        &mut self,
        op: CmpOp,
        lhs: &'a Node,
        rhs: &'a Node,
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        let left = self.eval(lhs, current)?;
        let right = self.eval(rhs, current)?;
        let result = match op {
            CmpOp::Eq => Value::Bool(self.deep_equal(&left, &right)?),
            CmpOp::Ne => Value::Bool(!self.deep_equal(&left, &right)?),
            _ => match (left.as_ref(), right.as_ref()) {
                (Value::Number(a), Value::Number(b)) => {
                    let ord = compare_numbers(a, b);
                    Value::Bool(match op {
                        CmpOp::Lt => ord == Ordering::Less,
                        CmpOp::Le => ord != Ordering::Greater,
                        CmpOp::Gt => ord == Ordering::Greater,
                        _ => ord != Ordering::Less,
                    })
                }
                _ => Value::Null,
            },
        };
        Ok(Cow::Owned(result))
    }

    #[inline(never)]
    fn multi_list<'a>(
        &mut self,
        items: &'a [Node],
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        if current.is_null() {
            return Ok(Cow::Borrowed(NULL));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut size = 2usize;
        for item in items {
            let v = self.eval(item, current)?;
            size = size.saturating_add(self.measure(&v)? + 1);
            self.check_size(size)?;
            out.push(v.into_owned());
        }
        Ok(Cow::Owned(Value::Array(out)))
    }

    #[inline(never)]
    fn multi_hash<'a>(
        &mut self,
        pairs: &'a [(String, Node)],
        current: &'a Value,
    ) -> Result<Cow<'a, Value>, EvalError> {
        if current.is_null() {
            return Ok(Cow::Borrowed(NULL));
        }
        let mut out = Map::new();
        let mut size = 2usize;
        for (key, item) in pairs {
            let v = self.eval(item, current)?;
            size = size.saturating_add(self.measure(&v)? + key.len() + 4);
            self.check_size(size)?;
            out.insert(key.clone(), v.into_owned());
        }
        Ok(Cow::Owned(Value::Object(out)))
    }

    /// Applies `rhs` to each element, keeping non-null results.
    fn project<'v>(
        &mut self,
        items: impl Iterator<Item = &'v Value>,
        rhs: &Node,
    ) -> Result<Value, EvalError> {
        let mut out = Vec::new();
        let mut size = 2usize;
        for item in items {
            self.tick(1)?;
            let v = self.eval(rhs, item)?;
            if !v.is_null() {
                size = size.saturating_add(self.measure(&v)? + 1);
                self.check_size(size)?;
                out.push(v.into_owned());
            }
        }
        Ok(Value::Array(out))
    }

    fn filter(&mut self, items: &[Value], cond: &Node, rhs: &Node) -> Result<Value, EvalError> {
        let mut out = Vec::new();
        let mut size = 2usize;
        for item in items {
            self.tick(1)?;
            let keep = is_truthy(self.eval(cond, item)?.as_ref());
            if keep {
                let v = self.eval(rhs, item)?;
                if !v.is_null() {
                    size = size.saturating_add(self.measure(&v)? + 1);
                    self.check_size(size)?;
                    out.push(v.into_owned());
                }
            }
        }
        Ok(Value::Array(out))
    }
}

/// The indices selected by a slice over an array of `len` elements (`step != 0`).
/// The result has at most `len` entries, whatever the step.
pub(crate) fn slice_indices(
    len: usize,
    start: Option<i64>,
    stop: Option<i64>,
    step: i64,
) -> Vec<usize> {
    let len = len as i64;
    let adjust = |v: i64| -> i64 {
        if v < 0 {
            let v = v.saturating_add(len);
            if v < 0 {
                if step < 0 { -1 } else { 0 }
            } else {
                v
            }
        } else if v >= len {
            if step < 0 { len - 1 } else { len }
        } else {
            v
        }
    };
    let start = match start {
        Some(s) => adjust(s),
        None => {
            if step < 0 {
                len - 1
            } else {
                0
            }
        }
    };
    let stop = match stop {
        Some(s) => adjust(s),
        None => {
            if step < 0 {
                -1
            } else {
                len
            }
        }
    };
    let mut out = Vec::new();
    let mut i = start;
    if step > 0 {
        while i < stop {
            out.push(i as usize);
            i = match i.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    } else {
        while i > stop {
            if i >= 0 {
                out.push(i as usize);
            }
            i = match i.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::slice_indices;

    #[test]
    fn slice_indices_follow_python_semantics() {
        assert_eq!(slice_indices(5, None, None, 1), [0, 1, 2, 3, 4]);
        assert_eq!(slice_indices(5, None, None, -1), [4, 3, 2, 1, 0]);
        assert_eq!(slice_indices(5, Some(1), Some(-1), 2), [1, 3]);
        assert_eq!(slice_indices(5, Some(-2), None, -2), [3, 1]);
        assert_eq!(slice_indices(0, None, None, -1), Vec::<usize>::new());
        assert_eq!(
            slice_indices(3, Some(i64::MIN), Some(i64::MAX), i64::MAX),
            [0]
        );
        assert_eq!(
            slice_indices(3, Some(i64::MAX), Some(i64::MIN), i64::MIN),
            [2]
        );
    }
}
