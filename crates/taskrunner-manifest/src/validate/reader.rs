//! Typed reads from the positioned YAML tree: a mapping with its known fields checked,
//! strings, booleans, bounded integers, sequences, plain JSON values, duplicate keys, and the
//! generic problems (missing field, wrong enum value, duplicate name, field not allowed).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::Validator;
use crate::codes;
use crate::schema;
use crate::suggest;
use crate::yaml::{Entry, Node, Pos, Value};

/// A mapping node with its known fields checked.
pub(super) struct Obj<'a> {
    path: String,
    pub(super) pos: Pos,
    pub(super) entries: BTreeMap<&'a str, &'a Entry>,
}

impl<'a> Obj<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .get(key)
            .map(|e| &e.value)
            .filter(|n| n.value != Value::Null)
    }
    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    pub(super) fn field_path(&self, key: &str) -> String {
        join(&self.path, key)
    }
    pub(super) fn key_pos(&self, key: &str) -> Pos {
        self.entries.get(key).map_or(self.pos, |e| e.key_pos)
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Validator {
    /// Reports every repeated mapping key (the tree keeps the first occurrence) at its path.
    pub(super) fn duplicate_keys(&mut self, root: &Node, path: &str) {
        let mut reported = BTreeSet::new();
        self.duplicate_keys_in(root, path, &mut reported);
    }

    fn duplicate_keys_in(&mut self, node: &Node, path: &str, reported: &mut BTreeSet<(u32, u32)>) {
        if let Value::Map(entries) = &node.value {
            for dup in &node.duplicates {
                // An anchored mapping replayed by aliases is reported once, at its first path.
                if dup.key_pos.line > 0 && !reported.insert((dup.key_pos.line, dup.key_pos.column))
                {
                    continue;
                }
                let first = entries
                    .iter()
                    .find(|e| e.key == dup.key)
                    .map(|e| e.key_pos)
                    .filter(|p| p.line > 0)
                    .map_or_else(String::new, |p| {
                        format!(" (first at line {}, column {})", p.line, p.column)
                    });
                self.error(
                    codes::DUPLICATE_KEY,
                    join(path, &dup.key),
                    dup.key_pos,
                    format!(
                        "duplicate mapping key '{}'{first}",
                        schema::excerpt(&dup.key)
                    ),
                );
            }
            for entry in entries {
                self.duplicate_keys_in(&entry.value, &join(path, &entry.key), reported);
            }
        } else if let Value::Seq(items) = &node.value {
            for (i, item) in items.iter().enumerate() {
                self.duplicate_keys_in(item, &format!("{path}[{i}]"), reported);
            }
        }
    }

    pub(super) fn object<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        known: &[&str],
    ) -> Option<Obj<'a>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(path, node, "a mapping");
            return None;
        };
        let mut map = BTreeMap::new();
        for entry in entries {
            if known.contains(&entry.key.as_str()) {
                map.insert(entry.key.as_str(), entry);
            } else {
                let hint = if entry.key == "<<" {
                    " (YAML merge keys are not supported; use anchors and aliases)".to_owned()
                } else {
                    suggest::hint(&entry.key, known.iter().copied())
                };
                self.error(
                    codes::UNKNOWN_FIELD,
                    join(path, &entry.key),
                    entry.key_pos,
                    format!("unknown field '{}'{hint}", schema::excerpt(&entry.key)),
                );
            }
        }
        Some(Obj {
            path: path.to_owned(),
            pos: node.pos,
            entries: map,
        })
    }

    pub(super) fn missing(&mut self, obj: &Obj<'_>, key: &str) {
        self.error(
            codes::MISSING_FIELD,
            obj.field_path(key),
            obj.pos,
            format!("missing required field '{key}'"),
        );
    }

    pub(super) fn opt_str(&mut self, obj: &Obj<'_>, key: &str) -> Option<(String, Pos)> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Str(s) => Some((s.clone(), node.pos)),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a string");
                None
            }
        }
    }

    pub(super) fn req_str(&mut self, obj: &Obj<'_>, key: &str) -> Option<(String, Pos)> {
        if !obj.has(key) {
            self.missing(obj, key);
            return None;
        }
        self.opt_str(obj, key)
    }

    pub(super) fn opt_bool(&mut self, obj: &Obj<'_>, key: &str) -> Option<bool> {
        let node = obj.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer in `min..=max`. `Err(())` = present but invalid (already reported).
    pub(super) fn opt_int(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, ()> {
        let Some(node) = obj.get(key) else {
            return Ok(None);
        };
        let path = obj.field_path(key);
        let i = match &node.value {
            Value::Int(i) => *i,
            Value::BigInt(text) => {
                self.big_int(text, &path, node.pos);
                return Err(());
            }
            _ => {
                self.wrong_type(&path, node, "an integer");
                return Err(());
            }
        };
        if i < i128::from(min) || i > i128::from(max) {
            let expected = if max == i64::MAX || i128::from(max) >= schema::INTEGER_ABS_MAX {
                format!("an integer ≥ {min}")
            } else {
                format!("an integer between {min} and {max}")
            };
            self.error(
                codes::OUT_OF_RANGE,
                path,
                node.pos,
                format!("expected {expected}, found {i}"),
            );
            return Err(());
        }
        // In range of an i64 by the check above.
        Ok(i64::try_from(i).ok())
    }

    pub(super) fn opt_u32(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        min: u32,
    ) -> Result<Option<u32>, ()> {
        Ok(self
            .opt_int(obj, key, i64::from(min), i64::from(u32::MAX))?
            .and_then(|i| u32::try_from(i).ok()))
    }

    pub(super) fn opt_u64(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        min: u64,
    ) -> Result<Option<u64>, ()> {
        let min = i64::try_from(min).unwrap_or(i64::MAX);
        Ok(self
            .opt_int(
                obj,
                key,
                min,
                i64::try_from(schema::INTEGER_ABS_MAX).unwrap_or(i64::MAX),
            )?
            .and_then(|i| u64::try_from(i).ok()))
    }

    pub(super) fn opt_seq<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Option<&'a [Node]> {
        let node = obj.get(key)?;
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.wrong_type(&obj.field_path(key), node, "a sequence");
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, obj: &Obj<'_>, key: &str) -> Vec<String> {
        let Some(items) = self.opt_seq(obj, key) else {
            return Vec::new();
        };
        let path = obj.field_path(key);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::Str(s) => out.push(s.clone()),
                _ => self.wrong_type(&format!("{path}[{i}]"), item, "a string"),
            }
        }
        out
    }

    /// YAML → JSON, rejecting integers outside ±2^53.
    pub(super) fn json(&mut self, node: &Node, path: &str) -> Option<Json> {
        Some(match &node.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::Number(self.int_number(*i, path, node.pos)?),
            Value::BigInt(text) => {
                self.big_int(text, path, node.pos);
                return None;
            }
            Value::Float(f) => Json::Number(self.float_number(*f, path, node.pos)?),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.json(item, &format!("{path}[{i}]")) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Json::Array(out)
            }
            Value::Map(entries) => {
                let mut out = serde_json::Map::new();
                let mut ok = true;
                for entry in entries {
                    match self.json(&entry.value, &join(path, &entry.key)) {
                        Some(v) => {
                            out.insert(entry.key.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Json::Object(out)
            }
        })
    }

    pub(super) fn int_number(
        &mut self,
        i: i128,
        path: &str,
        pos: Pos,
    ) -> Option<serde_json::Number> {
        if i.abs() > schema::INTEGER_ABS_MAX {
            self.big_int(&i.to_string(), path, pos);
            return None;
        }
        i64::try_from(i).ok().map(serde_json::Number::from)
    }

    /// An integer literal outside ±2^53 (SPEC §8.1 rule 6).
    pub(super) fn big_int(&mut self, text: &str, path: &str, pos: Pos) {
        self.error(
            codes::OUT_OF_RANGE,
            path,
            pos,
            format!(
                "integer {} is outside the range ±2^53 (9007199254740992)",
                schema::excerpt(text)
            ),
        );
    }

    /// A finite float; `.inf`, `.nan` and literals such as `1e400` are reported.
    pub(super) fn float_number(
        &mut self,
        f: f64,
        path: &str,
        pos: Pos,
    ) -> Option<serde_json::Number> {
        let number = serde_json::Number::from_f64(f);
        if number.is_none() {
            self.error(
                codes::OUT_OF_RANGE,
                path,
                pos,
                format!(
                    "{} is not a finite number, expected a finite number",
                    crate::yaml::float_text(f)
                ),
            );
        }
        number
    }

    pub(super) fn invalid_enum(&mut self, path: &str, pos: Pos, found: &str, allowed: &[&str]) {
        let hint = suggest::hint(found, allowed.iter().copied());
        self.error(
            codes::INVALID_VALUE,
            path,
            pos,
            format!(
                "expected one of {}, found '{}'{hint}",
                allowed.join(", "),
                schema::excerpt(found)
            ),
        );
    }

    /// Reports a duplicate name; returns whether `name` was new.
    pub(super) fn unique(
        &mut self,
        seen: &mut BTreeMap<String, String>,
        name: &str,
        path: String,
        pos: Pos,
        what: &str,
    ) -> bool {
        if let Some(first) = seen.get(name) {
            let message = format!(
                "duplicate {what} '{}' (first defined at {first})",
                schema::excerpt(name)
            );
            self.error(codes::DUPLICATE_NAME, path, pos, message);
            false
        } else {
            seen.insert(name.to_owned(), path);
            true
        }
    }

    pub(super) fn list_of<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Vec<(String, &'a Node)> {
        let Some(items) = self.opt_seq(obj, key) else {
            return Vec::new();
        };
        let base = obj.field_path(key);
        items
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{base}[{i}]"), n))
            .collect()
    }

    pub(super) fn not_allowed(&mut self, obj: &Obj<'_>, key: &str, when: &str) {
        if obj.entries.contains_key(key) {
            self.error(
                codes::UNKNOWN_FIELD,
                obj.field_path(key),
                obj.key_pos(key),
                format!("field '{key}' is not allowed when {when}"),
            );
        }
    }
}
