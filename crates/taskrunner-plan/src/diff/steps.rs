//! The step tree, by step id: steps added and removed (a subtree as one change), moved (another
//! parent, or out of order among the siblings both plans share), and each member changed —
//! `with` parameter by parameter, `retries` member by member, the rest whole. Iterations of a
//! map or loop (`id[i]::child`) with the same change are grouped into one change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::{Change, Instance, Op, Section};

/// Members of a step that are not compared as fields (the id is the key; children are steps).
const STRUCTURE: [&str; 2] = ["id", "children"];
/// Members reported before the others, in this order.
const FIRST: [&str; 2] = ["kind", "uses"];
/// Members compared member by member.
const NESTED: [&str; 1] = ["retries"];

struct Node<'a> {
    id: &'a str,
    parent: Option<&'a str>,
    position: usize,
    step: &'a Map<String, Value>,
}

/// Step changes, grouped; `None` when a side is not a tree of steps with distinct ids (the
/// caller then compares the lists whole).
pub(super) fn diff_steps(x: Option<&Value>, y: Option<&Value>) -> Option<Vec<Change>> {
    let empty = Vec::new();
    let xs = list(x, &empty)?;
    let ys = list(y, &empty)?;
    let (mut old, mut new) = (Vec::new(), Vec::new());
    flatten(xs, None, &mut old)?;
    flatten(ys, None, &mut new)?;
    let old_ix = by_id(&old)?;
    let new_ix = by_id(&new)?;
    let moved = moved_steps(&old, &old_ix, &new);
    let mut raw: Vec<Change> = Vec::new();

    // Removed, a removed subtree as one change.
    let mut removed_roots: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &old {
        if new_ix.contains_key(node.id) {
            continue;
        }
        if let Some(&root) = node.parent.and_then(|p| removed_roots.get(p)) {
            raw[root].descendants += 1;
            removed_roots.insert(node.id, root);
            continue;
        }
        removed_roots.insert(node.id, raw.len());
        raw.push(step_change(Op::Removed, node.id, Some(node.step), None));
    }

    let mut added_roots: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &new {
        let Some(&o) = old_ix.get(node.id) else {
            if let Some(&root) = node.parent.and_then(|p| added_roots.get(p)) {
                raw[root].descendants += 1;
                added_roots.insert(node.id, root);
                continue;
            }
            added_roots.insert(node.id, raw.len());
            raw.push(step_change(Op::Added, node.id, None, Some(node.step)));
            continue;
        };
        let before = &old[o];
        if moved.contains(node.id) {
            let mut c = step_change(Op::Moved, node.id, Some(before.step), Some(node.step));
            c.old = Some(place(before));
            c.new = Some(place(node));
            raw.push(c);
        }
        for (field, a, b) in step_fields(before.step, node.step) {
            let mut c = step_change(Op::Changed, node.id, Some(before.step), Some(node.step));
            c.field = Some(field);
            c.old = a;
            c.new = b;
            raw.push(c);
        }
    }
    Some(group(raw))
}

fn list<'a>(v: Option<&'a Value>, empty: &'a Vec<Value>) -> Option<&'a Vec<Value>> {
    match v {
        None => Some(empty),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

fn flatten<'a>(steps: &'a [Value], parent: Option<&'a str>, out: &mut Vec<Node<'a>>) -> Option<()> {
    for (position, step) in steps.iter().enumerate() {
        let step = step.as_object()?;
        let id = step.get("id")?.as_str()?;
        out.push(Node {
            id,
            parent,
            position,
            step,
        });
        if let Some(children) = step.get("children") {
            flatten(children.as_array()?, Some(id), out)?;
        }
    }
    Some(())
}

fn by_id<'a>(nodes: &[Node<'a>]) -> Option<BTreeMap<&'a str, usize>> {
    let mut ix = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if ix.insert(n.id, i).is_some() {
            return None;
        }
    }
    Some(ix)
}

/// Steps in both plans under another parent, or out of order among the siblings both plans
/// share under the same parent (those outside a longest run kept in order).
fn moved_steps<'a>(
    old: &[Node<'a>],
    old_ix: &BTreeMap<&'a str, usize>,
    new: &[Node<'a>],
) -> BTreeSet<&'a str> {
    let mut moved = BTreeSet::new();
    let mut siblings: BTreeMap<Option<&str>, Vec<(&str, usize)>> = BTreeMap::new();
    for node in new {
        let Some(&o) = old_ix.get(node.id) else {
            continue;
        };
        if old[o].parent != node.parent {
            moved.insert(node.id);
        } else {
            siblings
                .entry(node.parent)
                .or_default()
                .push((node.id, old[o].position));
        }
    }
    for seq in siblings.values() {
        let positions: Vec<usize> = seq.iter().map(|(_, p)| *p).collect();
        let keep = longest_increasing(&positions);
        for (i, (id, _)) in seq.iter().enumerate() {
            if !keep.contains(&i) {
                moved.insert(*id);
            }
        }
    }
    moved
}

/// Indices of one longest strictly increasing subsequence (patience sorting, O(n log n)).
fn longest_increasing(xs: &[usize]) -> BTreeSet<usize> {
    let mut tails: Vec<usize> = Vec::new(); // index into xs of the smallest tail per length
    let mut prev: Vec<Option<usize>> = vec![None; xs.len()];
    for (i, &x) in xs.iter().enumerate() {
        let len = tails.partition_point(|&t| xs[t] < x);
        prev[i] = len.checked_sub(1).map(|l| tails[l]);
        if len == tails.len() {
            tails.push(i);
        } else {
            tails[len] = i;
        }
    }
    let mut keep = BTreeSet::new();
    let mut cur = tails.last().copied();
    while let Some(i) = cur {
        keep.insert(i);
        cur = prev[i];
    }
    keep
}

fn place(node: &Node<'_>) -> Value {
    json!({"parent": node.parent, "position": node.position})
}

fn is_gate(step: Option<&Map<String, Value>>) -> bool {
    step.and_then(|s| s.get("kind"))
        .and_then(Value::as_str)
        .is_some_and(|k| k == "GateApproval" || k == "GatePolicy")
}

/// A step change of one step; added/removed carry the step without its children.
fn step_change(
    op: Op,
    id: &str,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> Change {
    let mut c = Change::new(Section::Steps, op).target(id);
    c.security_relevant = is_gate(old) || is_gate(new);
    c.steps = vec![id.to_owned()];
    let summary = |s: &Map<String, Value>| {
        let mut s = s.clone();
        s.remove("children");
        Value::Object(s)
    };
    match op {
        Op::Added => c.new = new.map(summary),
        Op::Removed => c.old = old.map(summary),
        Op::Changed | Op::Moved => {}
    }
    c
}

type FieldChange = (String, Option<Value>, Option<Value>);

/// The members of a step that differ (structure aside).
fn step_fields(x: &Map<String, Value>, y: &Map<String, Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
    // What the step is comes first: its kind, then what it runs; the rest by name.
    keys.sort_by_key(|k| (FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()), *k));
    keys.dedup();
    for key in keys {
        if STRUCTURE.contains(&key.as_str()) {
            continue;
        }
        let (a, b) = (x.get(key), y.get(key));
        if a == b {
            continue;
        }
        if key == "with" {
            if let (Some(wa), Some(wb)) = (with_members(a), with_members(b)) {
                let before = out.len();
                let mut names: Vec<&String> = wa.keys().chain(wb.keys()).collect();
                names.sort();
                names.dedup();
                for name in names {
                    let (p, q) = (wa.get(name), wb.get(name));
                    if p != q {
                        out.push((format!("with.{name}"), p.cloned(), q.cloned()));
                    }
                }
                if out.len() > before {
                    continue;
                }
            }
        } else if NESTED.contains(&key.as_str())
            && let (Some(Value::Object(ma)), Some(Value::Object(mb))) = (a, b)
        {
            let before = out.len();
            let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let (p, q) = (ma.get(name), mb.get(name));
                if p != q {
                    out.push((format!("{key}.{name}"), p.cloned(), q.cloned()));
                }
            }
            if out.len() > before {
                continue;
            }
        }
        out.push((key.clone(), a.cloned(), b.cloned()));
    }
    out
}

/// The parameters of an encoded `with` object by name, each in its own plan encoding: a
/// literal object wrapped as `{"$literal": …}` is unwrapped (members re-encoded), and a
/// symbolic object's `$$`-escaped names are unescaped. A missing `with` has no parameters.
fn with_members(v: Option<&Value>) -> Option<BTreeMap<String, Value>> {
    let Some(v) = v else {
        return Some(BTreeMap::new());
    };
    let m = v.as_object()?;
    if m.len() == 1
        && let Some(Value::Object(inner)) = m.get("$literal")
    {
        return Some(
            inner
                .iter()
                .map(|(k, v)| {
                    let encoded = crate::value::PlanValue::Literal(v.clone()).to_json();
                    (k.clone(), encoded)
                })
                .collect(),
        );
    }
    if m.keys().any(|k| k.starts_with('$') && !k.starts_with("$$")) {
        return None; // a symbolic node, not an object of parameters
    }
    Some(
        m.iter()
            .map(|(k, v)| {
                let name = k.strip_prefix('$').filter(|_| k.starts_with("$$"));
                (name.unwrap_or(k).to_owned(), v.clone())
            })
            .collect(),
    )
}

/// `id` with every iteration index written `[*]`: `deploy[3]::push` → `deploy[*]::push`.
fn pattern(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    let mut rest = id;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if close > 0 && after[..close].bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str("[*]");
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Merges changes of iterations (same op and field, same id up to iteration indices) into one
/// change, in order of first appearance.
fn group(raw: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    let mut slots: BTreeMap<(String, &'static str, Option<String>), usize> = BTreeMap::new();
    for c in raw {
        let id = c.target.clone().unwrap_or_default();
        let pat = pattern(&id);
        if pat == id {
            out.push(c);
            continue;
        }
        let key = (pat.clone(), c.op.as_str(), c.field.clone());
        let Some(&slot) = slots.get(&key) else {
            slots.insert(key, out.len());
            out.push(c);
            continue;
        };
        let g = &mut out[slot];
        if g.steps.len() == 1 {
            g.target = Some(pat);
        }
        // Added, removed and moved iterations differ in their ids only: no instances.
        let uniform =
            c.op != Op::Changed || (g.instances.is_empty() && g.old == c.old && g.new == c.new);
        if !uniform && g.instances.is_empty() {
            g.instances = g
                .steps
                .iter()
                .map(|s| Instance {
                    step: s.clone(),
                    old: g.old.clone(),
                    new: g.new.clone(),
                })
                .collect();
        }
        if !g.instances.is_empty() {
            g.instances.push(Instance {
                step: id.clone(),
                old: c.old.clone(),
                new: c.new.clone(),
            });
        }
        g.steps.push(id);
        g.descendants += c.descendants;
        g.security_relevant |= c.security_relevant;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_replace_indices_only() {
        assert_eq!(pattern("a[3]::b[10]::c"), "a[*]::b[*]::c");
        assert_eq!(pattern("a[*]::b"), "a[*]::b");
        assert_eq!(pattern("plain"), "plain");
        assert_eq!(pattern("x[]y[1a]"), "x[]y[1a]");
    }

    #[test]
    fn longest_increasing_keeps_the_ordered_majority() {
        let keep = longest_increasing(&[0, 3, 1, 2]);
        assert_eq!(keep.into_iter().collect::<Vec<_>>(), vec![0, 2, 3]);
        assert!(longest_increasing(&[]).is_empty());
    }
}
