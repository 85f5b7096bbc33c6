//! The expression context of a step (`inputs`, `secrets`, `run`, `steps`, iteration
//! variables) and the `steps` entries an expression needs.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use taskrunner_expr::{Expression, render_text};
use taskrunner_plan::{Iterations, PlanStepKind, PlanValue, TemplatePiece};

use super::Cx;
use super::schedule::{dfs, subtree};
use crate::state::Node;

/// Which entries of `steps` an expression context must hold.
///
/// Building every step's entry is O(steps in the run); doing it for each run-time evaluation
/// made a 10,000-item map quadratic. An expression can only observe the `steps` entries it
/// names (`Expression::references`): when it reads the whole root, or `steps` other than
/// through `steps.<id>…`, every entry is built ([`Need::All`]); otherwise only the named ids
/// ([`Need::Ids`]), resolved exactly as in the full context (iteration siblings by template id
/// included). Keys the expression cannot observe are the only difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Need {
    All,
    Ids(BTreeSet<String>),
}

impl Need {
    pub(super) fn none() -> Need {
        Need::Ids(BTreeSet::new())
    }

    /// Adds what one expression reads.
    pub(super) fn add(&mut self, expr: &Expression) {
        let Need::Ids(ids) = self else { return };
        let refs = expr.references();
        if refs.whole_root {
            *self = Need::All;
            return;
        }
        for path in &refs.paths {
            match path.as_slice() {
                [root] if root == "steps" => {
                    *self = Need::All;
                    return;
                }
                [root, id, ..] if root == "steps" => {
                    ids.insert(id.clone());
                }
                _ => {}
            }
        }
    }

    pub(super) fn of(exprs: &[&Expression]) -> Need {
        let mut need = Need::none();
        for e in exprs {
            need.add(e);
        }
        need
    }

    /// Adds every run-time expression of a plan value.
    fn add_value(&mut self, value: &PlanValue) {
        match value {
            PlanValue::Literal(_) => {}
            PlanValue::Expr(e) => self.add(e),
            PlanValue::Template(pieces) => {
                for piece in pieces {
                    if let TemplatePiece::Expr(e) = piece {
                        self.add(e);
                    }
                }
            }
            PlanValue::Array(items) => items.iter().for_each(|v| self.add_value(v)),
            PlanValue::Object(members) => members.values().for_each(|v| self.add_value(v)),
        }
    }

    pub(super) fn of_value(value: &PlanValue) -> Need {
        let mut need = Need::none();
        need.add_value(value);
        need
    }

    fn wants(&self, id: &str) -> bool {
        match self {
            Need::All => true,
            Need::Ids(ids) => ids.contains(id),
        }
    }
}

impl<'a> Cx<'a> {
    /// `{inputs, secrets, run, steps, <iteration variables>}` as seen from step `at`
    /// (`None`: the run level, for pack outputs), with every step in `steps`.
    pub(super) fn context(&self, at: Option<usize>) -> Value {
        self.context_for(at, &Need::All)
    }

    /// The context an expression needs: [`Cx::context`] with `steps` limited to the ids in
    /// `need` (see [`Need`]). Same values as the full context for every key the expression
    /// can read, without building an entry for each step of the run.
    pub(super) fn context_for(&self, at: Option<usize>, need: &Need) -> Value {
        let st = &*self.st;
        let mut ctx = Map::new();
        ctx.insert(
            "inputs".into(),
            Value::Object(
                self.plan
                    .inputs()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
        ctx.insert("secrets".into(), self.secrets.to_json());
        ctx.insert(
            "run".into(),
            json!({"id": st.run_id, "tenant": st.tenant, "planHash": st.plan_hash}),
        );
        let entry = |n: &Node| {
            json!({
                "outputs": n.outputs.clone().unwrap_or(Value::Null),
                "status": n.status.as_str(),
            })
        };
        let mut steps = Map::new();
        match need {
            Need::All => {
                for i in dfs(st) {
                    let n = &st.nodes[i];
                    steps.insert(n.id.clone(), entry(n));
                }
            }
            Need::Ids(ids) => {
                // `index` holds exactly the attached nodes, the ones `dfs` visits.
                for id in ids {
                    if let Some(&k) = st.index.get(id)
                        && let Some(n) = st.nodes.get(k).filter(|n| !n.detached)
                    {
                        steps.insert(n.id.clone(), entry(n));
                    }
                }
            }
        }
        // Enclosing iterations, outermost first: bind their variables and let the template
        // ids of the iteration's steps mean this iteration's instances (rule 10).
        let mut chain = Vec::new();
        let mut cur = at;
        while let Some(c) = cur {
            let parent = st.nodes[c].parent;
            if let Some(p) = parent {
                chain.push((p, c));
            }
            cur = parent;
        }
        for (p, c) in chain.into_iter().rev() {
            let Some(def) = self.def(p) else { continue };
            let (iterator, index, body_len, plan_items) = match &def.kind {
                PlanStepKind::Map { iterations, .. } => ("item", "index", 1, iterations),
                PlanStepKind::Loop {
                    iterator,
                    index,
                    body_len,
                    iterations,
                    ..
                } => (iterator.as_str(), index.as_str(), *body_len, iterations),
                _ => continue,
            };
            let body_len = body_len.max(1);
            let pn = &st.nodes[p];
            // Children are created in arena order, so `children` is sorted.
            let Some(pos) = pn
                .children
                .binary_search(&c)
                .ok()
                .or_else(|| pn.children.iter().position(|&k| k == c))
            else {
                continue;
            };
            let it = pos / body_len;
            let item = match (&pn.items, plan_items) {
                (Some(items), _) => items.get(it).cloned(),
                (None, Iterations::Expanded { items }) => items.get(it).cloned(),
                (None, _) => None,
            };
            if let Some(item) = item {
                ctx.insert(iterator.to_owned(), item);
                ctx.insert(index.to_owned(), Value::from(it));
            }
            let from = it * body_len;
            let to = (from + body_len).min(pn.children.len());
            let mut members = Vec::new();
            for &k in pn.children.get(from..to).unwrap_or(&[]) {
                subtree(st, k, &mut members);
            }
            for k in members {
                let n = &st.nodes[k];
                if need.wants(&n.template_id) {
                    steps.insert(n.template_id.clone(), entry(n));
                }
            }
        }
        ctx.insert("steps".into(), Value::Object(steps));
        Value::Object(ctx)
    }

    pub(super) fn render(&self, value: &PlanValue, i: usize) -> String {
        match value.resolve(&self.context_for(Some(i), &Need::of_value(value))) {
            Ok(v) => render_text(&v),
            Err(e) => format!("{} (message could not be rendered: {e})", value.display()),
        }
    }
}
