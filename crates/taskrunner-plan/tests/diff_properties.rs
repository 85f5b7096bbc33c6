//! Properties of the semantic plan diff: a plan's diff with itself is empty; a diff is empty
//! exactly when the hashes are equal; the field a random mutation changed is reported.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use taskrunner_plan::{Op, Plan, Section, diff, plan_yaml};

/// A generated pack as JSON (JSON is YAML, so it is planned as it is).
fn pack_strategy() -> impl Strategy<Value = Value> {
    let word = "[a-z][a-z0-9]{0,5}";
    let scalar = prop_oneof![
        any::<i16>().prop_map(|i| json!(i)),
        any::<bool>().prop_map(|b| json!(b)),
        "[a-z ]{0,8}".prop_map(|s| json!(s)),
        Just(json!("{{ inputs.who }}")),
        Just(json!("{{ steps.pre.outputs.x }}")),
        Just(json!("token {{ secrets.token }}")),
    ];
    let step = (
        prop::collection::btree_map(word, scalar, 0..4),
        prop::sample::select(vec!["builtin:noop", "builtin:echo", "builtin:shell"]),
        prop::option::of(1u64..100),
    );
    (
        prop::collection::vec(step, 1..6),
        "[a-z]{1,6}",
        1u32..3,
        prop::collection::vec("[a-z]{1,5}\\.example\\.com", 0..3),
        prop::collection::vec(0i64..9, 0..4),
    )
        .prop_map(|(steps, who, required, egress, items)| {
            let mut list: Vec<Value> = steps
                .into_iter()
                .enumerate()
                .map(|(i, (with, uses, timeout))| {
                    let mut s = json!({"id": format!("s{i}"), "run": {"uses": uses, "with": with}});
                    if let Some(t) = timeout {
                        s["timeoutSeconds"] = json!(t);
                    }
                    s
                })
                .collect();
            list.insert(0, json!({"id": "pre", "run": {"uses": "builtin:noop"}}));
            list.push(json!({"id": "gate", "gate": {"approval": {"id": "ok"}}}));
            list.push(json!({"id": "fan", "map": {"items": "inputs.items", "step":
                {"id": "one", "run": {"uses": "builtin:echo", "with": {"n": "{{ item }}"}}}}}));
            json!({
                "apiVersion": "stellaops.io/pack.v1",
                "kind": "TaskPack",
                "metadata": {"name": "prop-diff", "version": "1.0.0"},
                "spec": {
                    "inputs": [
                        {"name": "who", "type": "string", "default": who},
                        {"name": "items", "type": "array", "default": items},
                    ],
                    "secrets": [{"name": "token"}],
                    "approvals": [{"id": "ok", "grants": ["a.b"], "requiredApprovals": required}],
                    "sandbox": {"mode": "networked", "egressAllowlist": egress, "cpuLimitMillicores": 500},
                    "steps": list,
                }
            })
        })
}

/// A mutation and what the diff must report for it: (section, target, field).
#[derive(Debug, Clone)]
enum Mutation {
    Param(usize, String, Value),
    Uses(usize),
    Timeout(usize, u64),
    When(usize),
    Add,
    Remove(usize),
    Swap,
    Required(u32),
    Egress(String),
    Cpu(u64),
    Who(String),
    Items(Vec<i64>),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..6, "[a-z][a-z0-9]{0,5}", "[a-z]{0,6}").prop_map(|(i, k, v)| Mutation::Param(
            i,
            k,
            json!(v)
        )),
        (0usize..6).prop_map(Mutation::Uses),
        (0usize..6, 1u64..100).prop_map(|(i, t)| Mutation::Timeout(i, t)),
        (0usize..6).prop_map(Mutation::When),
        Just(Mutation::Add),
        (0usize..6).prop_map(Mutation::Remove),
        Just(Mutation::Swap),
        (1u32..4).prop_map(Mutation::Required),
        "[a-z]{1,5}\\.example\\.org".prop_map(Mutation::Egress),
        (100u64..4000).prop_map(Mutation::Cpu),
        "[a-z]{1,6}".prop_map(Mutation::Who),
        prop::collection::vec(0i64..9, 0..5).prop_map(Mutation::Items),
    ]
}

/// Applies the mutation; returns what must be reported: (section, op, target, field).
fn mutate(
    pack: &mut Value,
    inputs: &mut Map<String, Value>,
    m: &Mutation,
) -> (Section, Op, Option<String>, Option<String>) {
    let spec = &mut pack["spec"];
    // `pre`, the run steps s0…, `gate`, `fan`.
    let runs = spec["steps"].as_array().unwrap().len() - 3;
    let sid = |i: usize| format!("s{}", i % runs);
    match m {
        Mutation::Param(i, k, v) => {
            spec["steps"][1 + i % runs]["run"]["with"][k] = v.clone();
            (
                Section::Steps,
                Op::Changed,
                Some(sid(*i)),
                Some(format!("with.{k}")),
            )
        }
        Mutation::Uses(i) => {
            spec["steps"][1 + i % runs]["run"]["uses"] = json!("builtin:sleep");
            (
                Section::Steps,
                Op::Changed,
                Some(sid(*i)),
                Some("uses".into()),
            )
        }
        Mutation::Timeout(i, t) => {
            spec["steps"][1 + i % runs]["timeoutSeconds"] = json!(t);
            (
                Section::Steps,
                Op::Changed,
                Some(sid(*i)),
                Some("timeoutSeconds".into()),
            )
        }
        Mutation::When(i) => {
            spec["steps"][1 + i % runs]["when"] = json!("steps.pre.outputs.go");
            (
                Section::Steps,
                Op::Changed,
                Some(sid(*i)),
                Some("when".into()),
            )
        }
        Mutation::Add => {
            let steps = spec["steps"].as_array_mut().unwrap();
            steps.insert(2, json!({"id": "extra", "run": {"uses": "builtin:noop"}}));
            (Section::Steps, Op::Added, Some("extra".into()), None)
        }
        Mutation::Remove(i) => {
            spec["steps"].as_array_mut().unwrap().remove(1 + i % runs);
            (Section::Steps, Op::Removed, Some(sid(*i)), None)
        }
        Mutation::Swap => {
            let steps = spec["steps"].as_array_mut().unwrap();
            let last = steps.len() - 1;
            steps.swap(1, last);
            // A step out of order among the top-level steps is reported as moved.
            (Section::Steps, Op::Moved, None, None)
        }
        Mutation::Required(r) => {
            spec["approvals"][0]["requiredApprovals"] = json!(r);
            (
                Section::Approvals,
                Op::Changed,
                Some("ok".into()),
                Some("requiredApprovals".into()),
            )
        }
        Mutation::Egress(host) => {
            spec["sandbox"]["egressAllowlist"]
                .as_array_mut()
                .unwrap()
                .push(json!(host));
            (
                Section::Sandbox,
                Op::Added,
                None,
                Some("egressAllowlist".into()),
            )
        }
        Mutation::Cpu(c) => {
            spec["sandbox"]["cpuLimitMillicores"] = json!(c);
            (
                Section::Sandbox,
                Op::Changed,
                None,
                Some("cpuLimitMillicores".into()),
            )
        }
        Mutation::Who(who) => {
            inputs.insert("who".into(), json!(who));
            (Section::Inputs, Op::Changed, Some("who".into()), None)
        }
        Mutation::Items(items) => {
            inputs.insert("items".into(), json!(items));
            (
                Section::Steps,
                Op::Changed,
                Some("fan".into()),
                Some("iterations".into()),
            )
        }
    }
}

fn plan(pack: &Value, inputs: &Map<String, Value>) -> Plan {
    plan_yaml(&pack.to_string(), inputs).unwrap_or_else(|e| panic!("{:?}\n{pack}", e.to_response()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_plan_diffed_with_itself_is_empty(pack in pack_strategy()) {
        let p = plan(&pack, &Map::new());
        let d = diff(&p, &p);
        prop_assert!(d.is_empty());
        prop_assert_eq!(d.to_text(), "no change\n");
        // A second planning of the same pack is another value with the same hash.
        prop_assert!(diff(&p, &plan(&pack, &Map::new())).is_empty());
    }

    #[test]
    fn a_mutation_is_reported_and_empty_iff_equal_hashes(
        pack in pack_strategy(),
        m in mutation_strategy(),
    ) {
        let old = plan(&pack, &Map::new());
        let (mut mutated, mut inputs) = (pack.clone(), Map::new());
        let (section, op, target, field) = mutate(&mut mutated, &mut inputs, &m);
        let new = plan(&mutated, &inputs);
        let d = diff(&old, &new);
        let back = diff(&new, &old);
        prop_assert_eq!(d.is_empty(), old.hash() == new.hash());
        prop_assert_eq!(back.is_empty(), old.hash() == new.hash());
        if old.hash() != new.hash() {
            let found = d.changes.iter().any(|c| {
                c.section == section
                    && c.op == op
                    && (target.is_none() || c.target == target || c.steps.iter().any(|s| Some(s) == target.as_ref()))
                    && (field.is_none() || c.field == field)
            });
            prop_assert!(found, "{:?} not reported as {:?} {:?} {:?} {:?}:\n{}", m, section, op, target, field, d.to_text());
            prop_assert!(d.to_text().lines().count() == d.changes.len());
        } else {
            prop_assert_eq!(d.to_text(), "no change\n");
        }
    }
}
