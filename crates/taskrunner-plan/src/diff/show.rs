//! The human forms: a value as an approver reads it (run-time expressions as `{{ … }}`,
//! templates as the template text, secrets therefore by name), and the text of a diff, one
//! line per change.

use serde_json::Value;

use super::{Change, Op, PlanDiff, Section};

/// Longest value shown in a line of text (characters); longer values end with `…`.
const SHOWN_MAX: usize = 160;

/// A value of the plan document in its human form.
pub(super) fn value(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, &mut out);
    out
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) if m.len() == 1 => {
            if let Some(Value::String(src)) = m.get("$expr") {
                out.push_str(&format!("{{{{ {src} }}}}"));
            } else if let Some(Value::Array(parts)) = m.get("$template") {
                let mut text = String::new();
                for p in parts {
                    match p {
                        Value::String(s) => text.push_str(s),
                        Value::Object(e) => {
                            let src = e.get("$expr").and_then(Value::as_str).unwrap_or("");
                            text.push_str(&format!("{{{{ {src} }}}}"));
                        }
                        other => text.push_str(&other.to_string()),
                    }
                }
                out.push_str(&Value::String(text).to_string());
            } else if let Some(lit) = m.get("$literal") {
                out.push_str(&lit.to_string());
            } else {
                write_object(m, out);
            }
        }
        Value::Object(m) => write_object(m, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn write_object(m: &serde_json::Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let name = if k.starts_with("$$") { &k[1..] } else { k };
        out.push_str(name);
        out.push_str(": ");
        write_value(v, out);
    }
    out.push('}');
}

fn shown(v: Option<&Value>) -> String {
    let text = v.map_or_else(|| "(none)".to_owned(), value);
    if text.chars().count() <= SHOWN_MAX {
        return text;
    }
    let mut cut: String = text.chars().take(SHOWN_MAX).collect();
    cut.push('…');
    cut
}

/// `no change`, or one line per change.
pub(super) fn text(d: &PlanDiff) -> String {
    if d.changes.is_empty() {
        return "no change\n".to_owned();
    }
    let mut out = String::new();
    for c in &d.changes {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

fn subject(c: &Change) -> String {
    let noun = match c.section {
        Section::Inputs => "input",
        Section::Secrets => "secret",
        Section::Approvals => "approval",
        Section::Policies => "policy",
        Section::Outputs => "output",
        Section::Steps => "step",
        Section::Document => "plan",
        other => other.as_str(),
    };
    let mut s = match &c.target {
        Some(t) => format!("{noun} {t}"),
        None => c.section.as_str().to_owned(),
    };
    if c.section == Section::Document {
        s = "plan".to_owned();
    }
    if c.steps.len() > 1 {
        s.push_str(&format!(" ({} iterations)", c.steps.len()));
    }
    s
}

fn line(c: &Change) -> String {
    let marker = match c.op {
        Op::Added => '+',
        Op::Removed => '-',
        Op::Changed => '~',
        Op::Moved => '>',
    };
    let mut s = format!("{marker} {}", subject(c));
    let field = c.field.as_deref();
    match c.op {
        Op::Changed => {
            let (old, new, example) = match c.instances.first() {
                Some(i) => (i.old.as_ref(), i.new.as_ref(), Some(&i.step)),
                None => (c.old.as_ref(), c.new.as_ref(), None),
            };
            if let Some(f) = field {
                s.push(' ');
                s.push_str(f);
            }
            if let Some(step) = example {
                s.push_str(&format!(" differs per iteration, e.g. {step}"));
            }
            s.push_str(&format!(": {} → {}", shown(old), shown(new)));
        }
        Op::Added | Op::Removed => {
            let v = if c.op == Op::Added { &c.new } else { &c.old };
            if let Some(f) = field {
                s.push_str(&format!(" {f}: {}", shown(v.as_ref())));
            } else if c.section == Section::Steps {
                s.push_str(&step_summary(v.as_ref()));
                if c.descendants > 0 {
                    s.push_str(&format!(", with {} steps below", c.descendants));
                }
            } else {
                s.push_str(&format!(
                    ": {}",
                    shown(without_key(c.section, v.as_ref()).as_ref())
                ));
            }
        }
        Op::Moved => {
            s.push_str(&format!(
                " moved: {} → {}",
                place(c.old.as_ref()),
                place(c.new.as_ref())
            ));
        }
    }
    if c.security_relevant {
        s.push_str("  [security-relevant]");
    }
    s
}

/// An added or removed item of a keyed list without its key (the subject names it).
fn without_key(section: Section, v: Option<&Value>) -> Option<Value> {
    let mut v = v?.clone();
    if let Value::Object(m) = &mut v {
        match section {
            Section::Secrets | Section::Outputs => m.remove("name"),
            Section::Approvals | Section::Policies => m.remove("id"),
            _ => None,
        };
    }
    Some(v)
}

/// ` (Run builtin:echo)`, ` (GateApproval release)`, ` (Map)`.
fn step_summary(step: Option<&Value>) -> String {
    let Some(step) = step else {
        return String::new();
    };
    let get = |k: &str| step.get(k).and_then(Value::as_str);
    let mut s = get("kind").unwrap_or("step").to_owned();
    for key in ["uses", "approvalId", "policyId"] {
        if let Some(v) = get(key) {
            s.push(' ');
            s.push_str(v);
        }
    }
    if step.get("enabled") == Some(&Value::Bool(false)) {
        s.push_str(", disabled");
    }
    format!(" ({s})")
}

/// `position 2 at top level`, `position 0 under deploy`.
fn place(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "(none)".to_owned();
    };
    let position = v.get("position").and_then(Value::as_u64).unwrap_or(0);
    match v.get("parent").and_then(Value::as_str) {
        Some(p) => format!("position {position} under {p}"),
        None => format!("position {position} at top level"),
    }
}
