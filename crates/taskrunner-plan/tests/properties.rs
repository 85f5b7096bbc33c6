//! Hash properties (SPEC §3): the plan hash ignores YAML presentation — key order, comments,
//! whitespace, quoting style, flow/block style and anchors — and changes under any semantic
//! mutation; planning never panics.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// A generated pack as JSON, rendered to YAML in many styles below.
fn pack_strategy() -> impl Strategy<Value = Value> {
    let word = "[a-z][a-z0-9]{0,6}";
    let scalar = prop_oneof![
        any::<i32>().prop_map(|i| json!(i)),
        any::<bool>().prop_map(|b| json!(b)),
        "[a-zA-Z0-9 ,.:!?-]{0,12}".prop_map(|s| json!(s)),
        Just(json!("{{ inputs.who }}")),
        Just(json!("hello {{ inputs.who }}!")),
        Just(json!(null)),
        Just(json!(1.5)),
    ];
    let with = prop::collection::btree_map(word, scalar, 0..4);
    let step = (
        with,
        prop::sample::select(vec!["builtin:noop", "builtin:echo", "builtin:x"]),
    );
    (
        prop::collection::vec(step, 1..5),
        "[a-z]{1,8}",
        1u32..4,
        prop::collection::vec("[a-z]{1,5}\\.[a-z]{1,5}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(steps, who, max_parallel, grants, gate)| {
            let mut list: Vec<Value> = steps
                .into_iter()
                .enumerate()
                .map(|(i, (with, uses))| {
                    json!({"id": format!("s{i}"), "run": {"uses": uses, "with": with}})
                })
                .collect();
            if gate {
                list.push(json!({"id": "gate", "gate": {"approval": {"id": "ok", "message": "go {{ inputs.who }}?"}}}));
            }
            let group = json!({"id": "group", "parallel": {"maxParallel": max_parallel, "steps": list}});
            json!({
                "apiVersion": "stellaops.io/pack.v1",
                "kind": "TaskPack",
                "metadata": {"name": "prop-pack", "version": "1.0.0"},
                "spec": {
                    "inputs": [{"name": "who", "type": "string", "default": who}],
                    "approvals": [{"id": "ok", "grants": grants}],
                    "steps": [group, {"id": "tail", "run": {"uses": "builtin:noop"}}]
                }
            })
        })
}

/// Presentation choices for one rendering.
#[derive(Debug, Clone)]
struct Style {
    seed: Vec<u8>,
    indent: usize,
}

impl Style {
    fn pick(&self, n: usize, salt: usize) -> usize {
        if self.seed.is_empty() || n == 0 {
            return 0;
        }
        usize::from(self.seed[salt % self.seed.len()]) % n
    }
}

struct Emitter<'a> {
    style: &'a Style,
    counter: usize,
    anchors: Vec<(Value, String)>,
}

impl Emitter<'_> {
    fn next(&mut self, n: usize) -> usize {
        self.counter += 1;
        self.style.pick(n, self.counter)
    }

    fn scalar(&mut self, v: &Value) -> String {
        match v {
            Value::String(s) => {
                let plain_ok = s.chars().all(|c| c.is_ascii_lowercase())
                    && !s.is_empty()
                    && !matches!(
                        s.as_str(),
                        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
                    );
                match self.next(3) {
                    0 if plain_ok => s.clone(),
                    1 => format!("'{}'", s.replace('\'', "''")),
                    _ => Value::String(s.clone()).to_string(),
                }
            }
            other => other.to_string(),
        }
    }

    fn flow(&mut self, v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                self.shuffle(&mut keys);
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}: {}", self.scalar(&json!(k)), self.node_flow(&m[*k])))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Value::Array(a) => {
                let parts: Vec<String> = a.iter().map(|x| self.node_flow(x)).collect();
                format!("[{}]", parts.join(", "))
            }
            other => self.scalar(other),
        }
    }

    fn node_flow(&mut self, v: &Value) -> String {
        if let Some(alias) = self.alias(v) {
            return alias;
        }
        let anchor = self.anchor(v);
        format!("{anchor}{}", self.flow(v))
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.next(i + 1);
            items.swap(i, j);
        }
    }

    fn alias(&mut self, v: &Value) -> Option<String> {
        if !(v.is_object() || v.is_array()) || self.next(2) == 0 {
            return None;
        }
        self.anchors
            .iter()
            .find(|(seen, _)| seen == v)
            .map(|(_, name)| format!("*{name}"))
    }

    fn anchor(&mut self, v: &Value) -> String {
        if !(v.is_object() || v.is_array()) || self.next(3) != 0 {
            return String::new();
        }
        let name = format!("a{}", self.anchors.len());
        self.anchors.push((v.clone(), name.clone()));
        format!("&{name} ")
    }

    /// Block style at `level`; `out` receives whole lines.
    fn block(&mut self, v: &Value, level: usize, out: &mut String) {
        let pad = " ".repeat(level * self.style.indent);
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                self.shuffle(&mut keys);
                for k in keys {
                    let child = &m[k];
                    let key = self.scalar(&json!(k));
                    let comment = if self.next(4) == 0 { "  # note" } else { "" };
                    if let Some(alias) = self.alias(child) {
                        out.push_str(&format!("{pad}{key}: {alias}{comment}\n"));
                    } else if (child.is_object() && !child.as_object().unwrap().is_empty())
                        || (child.is_array() && !child.as_array().unwrap().is_empty())
                    {
                        if self.next(3) == 0 {
                            let anchor = self.anchor(child);
                            out.push_str(&format!(
                                "{pad}{key}: {anchor}{}{comment}\n",
                                self.flow(child)
                            ));
                        } else {
                            let anchor = self.anchor(child);
                            out.push_str(&format!("{pad}{key}: {}{comment}\n", anchor.trim_end()));
                            if self.next(5) == 0 {
                                out.push('\n');
                            }
                            self.block(child, level + 1, out);
                        }
                    } else {
                        out.push_str(&format!("{pad}{key}: {}{comment}\n", self.flow(child)));
                    }
                }
            }
            Value::Array(a) => {
                for item in a {
                    if item.is_object()
                        && !item.as_object().unwrap().is_empty()
                        && self.next(2) == 0
                    {
                        let mut inner = String::new();
                        self.block(item, level + 1, &mut inner);
                        // Put the first line after the dash.
                        let inner_pad = " ".repeat((level + 1) * self.style.indent);
                        let mut lines = inner.lines();
                        if let Some(first) = lines.next() {
                            let dash =
                                format!("{pad}-{}", " ".repeat(self.style.indent.max(2) - 1));
                            let first = first.strip_prefix(&inner_pad).unwrap_or(first);
                            out.push_str(&format!("{dash}{first}\n"));
                            let rest_pad = " ".repeat(dash.len());
                            for line in lines {
                                let line = line
                                    .strip_prefix(&inner_pad)
                                    .map(|l| format!("{rest_pad}{l}"));
                                match line {
                                    Some(l) => out.push_str(&format!("{l}\n")),
                                    None => out.push('\n'),
                                }
                            }
                        }
                    } else {
                        out.push_str(&format!("{pad}- {}\n", self.node_flow(item)));
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", self.scalar(other))),
        }
    }
}

fn render(v: &Value, style: &Style) -> String {
    let mut e = Emitter {
        style,
        counter: 0,
        anchors: Vec::new(),
    };
    let mut out = String::from("# generated pack\n");
    e.block(v, 0, &mut out);
    out
}

fn hash_of(yaml: &str) -> String {
    match taskrunner_plan::plan_yaml(yaml, &Map::new()) {
        Ok(plan) => plan.hash().to_owned(),
        Err(e) => panic!("generated pack did not plan: {e}\n{yaml}"),
    }
}

fn style_strategy() -> impl Strategy<Value = Style> {
    (
        prop::collection::vec(any::<u8>(), 1..64),
        prop::sample::select(vec![2usize, 3, 4]),
    )
        .prop_map(|(seed, indent)| Style { seed, indent })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn presentation_never_changes_the_hash(pack in pack_strategy(), a in style_strategy(), b in style_strategy()) {
        let plain = Style { seed: vec![], indent: 2 };
        let reference = hash_of(&render(&pack, &plain));
        prop_assert_eq!(&hash_of(&render(&pack, &a)), &reference);
        prop_assert_eq!(&hash_of(&render(&pack, &b)), &reference);
    }

    #[test]
    fn semantic_mutations_change_the_hash(pack in pack_strategy(), which in 0usize..6) {
        let plain = Style { seed: vec![], indent: 2 };
        let before = hash_of(&render(&pack, &plain));
        let mut mutated = pack.clone();
        let spec = &mut mutated["spec"];
        match which {
            0 => spec["inputs"][0]["default"] = json!(format!("{}x", spec["inputs"][0]["default"].as_str().unwrap())),
            1 => spec["steps"][0]["parallel"]["steps"][0]["run"]["with"]["added"] = json!(1),
            2 => {
                let mp = spec["steps"][0]["parallel"]["maxParallel"].as_u64().unwrap();
                spec["steps"][0]["parallel"]["maxParallel"] = json!(mp + 1);
            }
            3 => spec["steps"].as_array_mut().unwrap().reverse(),
            4 => spec["approvals"][0]["grants"].as_array_mut().unwrap().push(json!("extra.grant")),
            _ => spec["steps"][1]["run"]["uses"] = json!("builtin:other"),
        }
        let after = hash_of(&render(&mutated, &plain));
        prop_assert_ne!(before, after);
    }

    #[test]
    fn an_input_value_changes_the_hash(pack in pack_strategy(), who in "[a-z]{9,12}") {
        let yaml = render(&pack, &Style { seed: vec![], indent: 2 });
        let base = taskrunner_plan::plan_yaml(&yaml, &Map::new()).unwrap();
        let mut inputs = Map::new();
        inputs.insert("who".into(), json!(who));
        let other = taskrunner_plan::plan_yaml(&yaml, &inputs).unwrap();
        prop_assert_ne!(base.hash(), other.hash());
        let again = taskrunner_plan::plan_yaml(&yaml, &inputs).unwrap();
        prop_assert_eq!(other.canonical_json(), again.canonical_json());
    }

    #[test]
    fn planning_never_panics(text in "(?s).{0,400}", pack in pack_strategy(), cut in 0usize..2000, junk in "[ :{}\\[\\]\\-'\"#&*!|>a-z0-9\n]{0,8}") {
        let _ = taskrunner_plan::plan_yaml(&text, &Map::new());
        let mut yaml = render(&pack, &Style { seed: vec![], indent: 2 });
        let at = yaml.char_indices().map(|(i, _)| i).nth(cut % yaml.chars().count().max(1)).unwrap_or(0);
        yaml.insert_str(at, &junk);
        let _ = taskrunner_plan::plan_yaml(&yaml, &Map::new());
    }
}

#[test]
fn the_renderer_really_varies_presentation() {
    // Guard against a property that passes because every style renders the same text.
    let pack = json!({
        "apiVersion": "stellaops.io/pack.v1", "kind": "TaskPack",
        "metadata": {"name": "p", "version": "1.0.0"},
        "spec": {"steps": [{"id": "a", "run": {"uses": "builtin:noop", "with": {"x": {"y": [1, 2]}, "z": {"y": [1, 2]}}}}]}
    });
    let texts: std::collections::BTreeSet<String> = (0u8..20)
        .map(|i| {
            render(
                &pack,
                &Style {
                    seed: vec![i, i.wrapping_mul(7), i ^ 0x5a],
                    indent: 2 + usize::from(i % 3),
                },
            )
        })
        .collect();
    assert!(texts.len() > 10, "only {} distinct renderings", texts.len());
    let hashes: std::collections::BTreeSet<String> = texts.iter().map(|t| hash_of(t)).collect();
    assert_eq!(hashes.len(), 1);
}
