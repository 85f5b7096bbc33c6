//! The plan document's sections other than steps: pack, inputs, secrets, failure, sandbox, slo,
//! approvals, policies, outputs, and any member this diff does not know (compared whole).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Change, Op, Section, steps};

/// Every top-level member, in the order an approver reads them; then the rest.
const KNOWN: [(&str, Section); 10] = [
    ("pack", Section::Pack),
    ("inputs", Section::Inputs),
    ("secrets", Section::Secrets),
    ("failure", Section::Failure),
    ("sandbox", Section::Sandbox),
    ("slo", Section::Slo),
    ("approvals", Section::Approvals),
    ("policies", Section::Policies),
    ("steps", Section::Steps),
    ("outputs", Section::Outputs),
];

/// Changes between two plan documents.
pub(super) fn diff_documents(a: &Value, b: &Value) -> Vec<Change> {
    let empty = Map::new();
    let am = a.as_object().unwrap_or(&empty);
    let bm = b.as_object().unwrap_or(&empty);
    let mut out = Vec::new();
    for (key, section) in KNOWN {
        let (x, y) = (am.get(key), bm.get(key));
        if x == y {
            continue;
        }
        match section {
            Section::Pack | Section::Failure | Section::Slo => {
                fields(&mut out, section, None, x, y, "", &[]);
            }
            Section::Sandbox => sandbox(&mut out, x, y),
            Section::Inputs => inputs(&mut out, x, y),
            Section::Secrets | Section::Outputs => keyed(&mut out, section, "name", x, y),
            Section::Approvals | Section::Policies => keyed(&mut out, section, "id", x, y),
            Section::Steps => match steps::diff_steps(x, y) {
                Some(changes) => out.extend(changes),
                None => whole(&mut out, Section::Steps, None, "steps", x, y),
            },
            Section::Document => {}
        }
    }
    let known = |k: &str| KNOWN.iter().any(|(n, _)| *n == k);
    let mut others: Vec<&String> = am.keys().chain(bm.keys()).filter(|k| !known(k)).collect();
    others.sort();
    others.dedup();
    for key in others {
        whole(
            &mut out,
            Section::Document,
            None,
            key,
            am.get(key),
            bm.get(key),
        );
    }
    out
}

/// One change of a whole value (nothing when equal).
pub(super) fn whole(
    out: &mut Vec<Change>,
    section: Section,
    target: Option<&str>,
    field: &str,
    x: Option<&Value>,
    y: Option<&Value>,
) {
    if x == y {
        return;
    }
    let mut c = Change::new(section, Op::Changed).field(field).values(x, y);
    c.target = target.map(str::to_owned);
    out.push(c);
}

/// Member-by-member changes of two objects (`prefix` before each member name; members in
/// `skip` are left to the caller). Anything but two objects is compared whole.
pub(super) fn fields(
    out: &mut Vec<Change>,
    section: Section,
    target: Option<&str>,
    x: Option<&Value>,
    y: Option<&Value>,
    prefix: &str,
    skip: &[&str],
) {
    let (Some(Value::Object(xm)), Some(Value::Object(ym))) = (x, y) else {
        let name = prefix.trim_end_matches('.');
        let name = if name.is_empty() {
            section.as_str()
        } else {
            name
        };
        whole(out, section, target, name, x, y);
        return;
    };
    let mut keys: Vec<&String> = xm.keys().chain(ym.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let field = format!("{prefix}{key}");
        whole(out, section, target, &field, xm.get(key), ym.get(key));
    }
}

fn sandbox(out: &mut Vec<Change>, x: Option<&Value>, y: Option<&Value>) {
    const ALLOWLIST: &str = "egressAllowlist";
    let (Some(Value::Object(xm)), Some(Value::Object(ym))) = (x, y) else {
        whole(out, Section::Sandbox, None, "sandbox", x, y);
        return;
    };
    fields(out, Section::Sandbox, None, x, y, "", &[ALLOWLIST]);
    let (xa, ya) = (xm.get(ALLOWLIST), ym.get(ALLOWLIST));
    if xa == ya {
        return;
    }
    let (Some(Value::Array(xs)), Some(Value::Array(ys))) = (xa, ya) else {
        whole(out, Section::Sandbox, None, ALLOWLIST, xa, ya);
        return;
    };
    let before = out.len();
    for (entry, count) in multiset_minus(xs, ys) {
        for _ in 0..count {
            out.push(
                Change::new(Section::Sandbox, Op::Removed)
                    .field(ALLOWLIST)
                    .values(Some(entry), None),
            );
        }
    }
    for (entry, count) in multiset_minus(ys, xs) {
        for _ in 0..count {
            out.push(
                Change::new(Section::Sandbox, Op::Added)
                    .field(ALLOWLIST)
                    .values(None, Some(entry)),
            );
        }
    }
    if out.len() == before {
        // Same entries in another order: still a different plan.
        whole(out, Section::Sandbox, None, ALLOWLIST, xa, ya);
    }
}

/// Entries of `xs` not matched by an equal entry of `ys` (with multiplicity), in `xs` order.
fn multiset_minus<'a>(xs: &'a [Value], ys: &'a [Value]) -> Vec<(&'a Value, usize)> {
    let key = |v: &Value| crate::jcs::to_canonical(v);
    let mut have: BTreeMap<String, usize> = BTreeMap::new();
    for y in ys {
        *have.entry(key(y)).or_default() += 1;
    }
    let mut out: Vec<(&Value, usize)> = Vec::new();
    for x in xs {
        let left = have.entry(key(x)).or_default();
        if *left > 0 {
            *left -= 1;
        } else {
            out.push((x, 1));
        }
    }
    out
}

fn inputs(out: &mut Vec<Change>, x: Option<&Value>, y: Option<&Value>) {
    let (Some(Value::Object(xm)), Some(Value::Object(ym))) = (x, y) else {
        whole(out, Section::Inputs, None, "inputs", x, y);
        return;
    };
    let mut keys: Vec<&String> = xm.keys().chain(ym.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (a, b) = (xm.get(key), ym.get(key));
        let op = match (a, b) {
            (None, Some(_)) => Op::Added,
            (Some(_), None) => Op::Removed,
            (Some(a), Some(b)) if a != b => Op::Changed,
            _ => continue,
        };
        out.push(Change::new(Section::Inputs, op).target(key).values(a, b));
    }
}

/// A list of objects identified by `key_field` (secrets, approvals, policies, outputs): items
/// added and removed, members changed, and a change of order. A list whose items are not all
/// objects with a distinct key is compared whole.
fn keyed(
    out: &mut Vec<Change>,
    section: Section,
    key_field: &str,
    x: Option<&Value>,
    y: Option<&Value>,
) {
    let (Some(xi), Some(yi)) = (index(x, key_field), index(y, key_field)) else {
        whole(out, section, None, section.as_str(), x, y);
        return;
    };
    for (k, v) in &xi {
        if find(&yi, k).is_none() {
            out.push(
                Change::new(section, Op::Removed)
                    .target(k)
                    .values(Some(v), None),
            );
        }
    }
    for (k, v) in &yi {
        if find(&xi, k).is_none() {
            out.push(
                Change::new(section, Op::Added)
                    .target(k)
                    .values(None, Some(v)),
            );
        }
    }
    for (k, v) in &yi {
        if let Some(old) = find(&xi, k) {
            fields(out, section, Some(k), Some(old), Some(v), "", &[key_field]);
        }
    }
    let common_x: Vec<&String> = xi
        .iter()
        .map(|(k, _)| k)
        .filter(|k| find(&yi, k).is_some())
        .collect();
    let common_y: Vec<&String> = yi
        .iter()
        .map(|(k, _)| k)
        .filter(|k| find(&xi, k).is_some())
        .collect();
    if common_x != common_y {
        out.push(
            Change::new(section, Op::Changed)
                .field("order")
                .values(Some(&json!(common_x)), Some(&json!(common_y))),
        );
    }
}

fn find<'a>(list: &[(String, &'a Value)], key: &str) -> Option<&'a Value> {
    list.iter().find(|(n, _)| n == key).map(|(_, v)| *v)
}

/// `(key, item)` of a list of objects with distinct string keys; `None` otherwise.
fn index<'a>(v: Option<&'a Value>, key_field: &str) -> Option<Vec<(String, &'a Value)>> {
    let items = match v {
        None => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return None,
    };
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(items.len());
    for item in items {
        let key = item.get(key_field)?.as_str()?.to_owned();
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        out.push((key, item));
    }
    Some(out)
}
