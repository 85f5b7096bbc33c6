//! Cross-reference checks for expressions (SPEC §1.9, §8.1 rules 3 and 10).
//!
//! Owns the step-order graph: every step sits at an index of a step list, and every list
//! belongs to a step (or is the top-level list). "Step T runs before site S" is decided by
//! comparing the two root-to-leaf chains of `(list, index)` pairs, so each check costs
//! O(nesting depth) plus a map lookup — never a scan over all steps.

use std::collections::{BTreeMap, BTreeSet};

use taskrunner_expr::References;

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::suggest;
use crate::validate::CONTEXT_ROOTS;
use crate::yaml::Pos;

/// How the steps of one list run relative to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// One after the other (top level, branches, `else`, `onFailure`).
    Sequential,
    /// Concurrently (`parallel.steps`): siblings never run before each other.
    Parallel,
    /// A map/loop body: once per iteration; invisible from outside the map/loop.
    Iteration,
}

/// A position in a step list: the step at `index`, or (for `until`) just past the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    pub(crate) list: usize,
    pub(crate) index: u32,
}

/// Where an expression is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UseTarget {
    /// In a step's field.
    Step(Site),
    /// In pack `outputs`: every step counts as earlier.
    Anywhere,
    /// In the definition of this policy: step references are checked at each gate using it.
    Policy(String),
    /// In the definition of this approval: step references are checked at each gate using it.
    Approval(String),
    /// A gate (at the boxed target) that evaluates this policy.
    GateUsesPolicy(String, Box<UseTarget>),
    /// A gate (at the boxed target) that uses this approval.
    GateUsesApproval(String, Box<UseTarget>),
}

/// One expression (or template) and where it sits.
#[derive(Debug, Clone)]
pub(crate) struct Use {
    pub(crate) refs: References,
    pub(crate) path: String,
    pub(crate) pos: Pos,
    pub(crate) target: UseTarget,
    pub(crate) vars: Vec<String>,
}

/// Declared names that expressions may read.
#[derive(Debug)]
pub(crate) struct Names<'a> {
    pub(crate) inputs: &'a BTreeSet<String>,
    pub(crate) secrets: &'a BTreeSet<String>,
    /// Some steps could not be read, so a missing id may just be unreadable: don't report it.
    pub(crate) steps_incomplete: bool,
}

#[derive(Debug)]
struct StepNode {
    list: usize,
    index: u32,
    id: Option<String>,
}

#[derive(Debug)]
struct ListNode {
    owner: Option<usize>,
    kind: ListKind,
}

/// Which references of a use to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    /// A policy/approval definition replayed at a gate that uses it (SPEC §8.1 rule 3):
    /// `steps.<id>` and the context roots, with the gate's iteration variables in scope.
    AtGate,
    /// A policy/approval definition, checked once: only `inputs.<name>` and `secrets.<name>`
    /// (which do not depend on where the text is evaluated).
    Definition,
}

/// The step tree, for order checks.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    steps: Vec<StepNode>,
    lists: Vec<ListNode>,
    /// Step id → (step, path of its `id` field), first occurrence.
    ids: BTreeMap<String, usize>,
    id_paths: BTreeMap<String, String>,
}

impl Graph {
    pub(crate) fn add_list(&mut self, owner: Option<usize>, kind: ListKind) -> usize {
        self.lists.push(ListNode { owner, kind });
        self.lists.len() - 1
    }

    pub(crate) fn add_step(&mut self, list: usize, index: u32) -> usize {
        self.steps.push(StepNode {
            list,
            index,
            id: None,
        });
        self.steps.len() - 1
    }

    /// Records the id of `step`; returns the first occurrence's path if the id is taken.
    pub(crate) fn register_id(&mut self, step: usize, id: &str, path: String) -> Option<String> {
        if let Some(first) = self.id_paths.get(id) {
            return Some(first.clone());
        }
        if let Some(node) = self.steps.get_mut(step) {
            node.id = Some(id.to_owned());
        }
        self.ids.insert(id.to_owned(), step);
        self.id_paths.insert(id.to_owned(), path);
        None
    }

    /// Root-to-leaf `(list, index)` pairs of a site.
    fn chain(&self, site: Site) -> Vec<(usize, u32)> {
        let mut chain = vec![(site.list, site.index)];
        let mut owner = self.lists.get(site.list).and_then(|l| l.owner);
        while let Some(step) = owner {
            let Some(node) = self.steps.get(step) else {
                break;
            };
            chain.push((node.list, node.index));
            owner = self.lists.get(node.list).and_then(|l| l.owner);
        }
        chain.reverse();
        chain
    }

    fn owner_id(&self, list: usize) -> String {
        self.lists
            .get(list)
            .and_then(|l| l.owner)
            .and_then(|s| self.steps.get(s))
            .and_then(|s| s.id.clone())
            .unwrap_or_default()
    }

    /// Why step `target` does not run before `site`, or `None` if it does.
    fn not_before(&self, target: usize, site: Site) -> Option<String> {
        let node = self.steps.get(target)?;
        let ct = self.chain(Site {
            list: node.list,
            index: node.index,
        });
        let cs = self.chain(site);
        let k = ct.iter().zip(&cs).take_while(|(a, b)| a == b).count();
        if k == ct.len() {
            return Some("it is this step or encloses it".to_owned());
        }
        if k == cs.len() {
            return Some("it is nested inside this step".to_owned());
        }
        let ((lt, it), (ls, is)) = (ct[k], cs[k]);
        if lt != ls {
            return Some("it is in a different branch of an enclosing step".to_owned());
        }
        if self
            .lists
            .get(lt)
            .is_some_and(|l| l.kind == ListKind::Parallel)
        {
            return Some("it runs in parallel with this step".to_owned());
        }
        if it > is {
            return Some("it runs after this step".to_owned());
        }
        // Steps inside a map/loop body have one instance per iteration: outside the body only
        // the map/loop's aggregated outputs exist.
        for &(list, _) in &ct[k + 1..] {
            if self
                .lists
                .get(list)
                .is_some_and(|l| l.kind == ListKind::Iteration)
            {
                let owner = self.owner_id(list);
                return Some(format!(
                    "it is inside map/loop '{owner}', which runs it once per iteration (use steps.{owner}.outputs)"
                ));
            }
        }
        None
    }

    /// Checks every use; returns the problems found.
    pub(crate) fn check(&self, uses: &[Use], names: &Names<'_>) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut definitions: BTreeMap<(bool, &str), Vec<&Use>> = BTreeMap::new();
        let mut used: BTreeSet<(bool, &str)> = BTreeSet::new();
        for u in uses {
            match &u.target {
                UseTarget::Policy(id) => definitions.entry((true, id)).or_default().push(u),
                UseTarget::Approval(id) => definitions.entry((false, id)).or_default().push(u),
                _ => {}
            }
        }
        for u in uses {
            match &u.target {
                UseTarget::Step(site) => {
                    self.check_use(
                        u,
                        Some(*site),
                        &u.vars,
                        &u.path,
                        u.pos,
                        "",
                        Mode::All,
                        names,
                        &mut out,
                    );
                }
                UseTarget::Anywhere => {
                    self.check_use(
                        u,
                        None,
                        &u.vars,
                        &u.path,
                        u.pos,
                        "",
                        Mode::All,
                        names,
                        &mut out,
                    );
                }
                UseTarget::Policy(_) | UseTarget::Approval(_) => {
                    self.check_use(
                        u,
                        None,
                        &[],
                        &u.path,
                        u.pos,
                        "",
                        Mode::Definition,
                        names,
                        &mut out,
                    );
                }
                UseTarget::GateUsesPolicy(id, gate) | UseTarget::GateUsesApproval(id, gate) => {
                    let key = (
                        matches!(u.target, UseTarget::GateUsesPolicy(..)),
                        id.as_str(),
                    );
                    used.insert(key);
                    let site = match gate.as_ref() {
                        UseTarget::Step(site) => Some(*site),
                        _ => None,
                    };
                    // The gate's iteration variables are in scope (SPEC §2).
                    for def in definitions.get(&key).into_iter().flatten() {
                        let prefix = format!("in {}: ", def.path);
                        self.check_use(
                            def,
                            site,
                            &u.vars,
                            &u.path,
                            u.pos,
                            &prefix,
                            Mode::AtGate,
                            names,
                            &mut out,
                        );
                    }
                }
            }
        }
        // Definitions no gate uses: their step references must at least exist, and their
        // context roots are checked with no iteration variables in scope.
        for (key, defs) in &definitions {
            if !used.contains(key) {
                for def in defs {
                    self.check_use(
                        def,
                        None,
                        &[],
                        &def.path,
                        def.pos,
                        "",
                        Mode::AtGate,
                        names,
                        &mut out,
                    );
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn check_use(
        &self,
        u: &Use,
        site: Option<Site>,
        vars: &[String],
        path: &str,
        pos: Pos,
        prefix: &str,
        mode: Mode,
        names: &Names<'_>,
        out: &mut Vec<Diagnostic>,
    ) {
        if u.refs.whole_root {
            return;
        }
        let mut reported = BTreeSet::new();
        let mut report = |code: &'static str, message: String| {
            if reported.insert(message.clone()) {
                let known = pos.line > 0;
                out.push(Diagnostic {
                    code,
                    path: path.to_owned(),
                    message: format!("{prefix}{message}"),
                    line: known.then_some(pos.line),
                    column: known.then_some(pos.column),
                });
            }
        };
        for chain in &u.refs.paths {
            let Some(root) = chain.first() else { continue };
            let second = chain.get(1);
            match root.as_str() {
                "steps" => {
                    let Some(id) = second else { continue };
                    if mode == Mode::Definition {
                        continue;
                    }
                    match self.ids.get(id.as_str()) {
                        None if names.steps_incomplete => {}
                        None => {
                            let hint = suggest::hint(id, self.ids.keys().map(String::as_str));
                            report(
                                codes::UNKNOWN_STEP,
                                format!("unknown step '{}'{hint}", crate::schema::excerpt(id)),
                            );
                        }
                        Some(&target) => {
                            if let Some(site) = site
                                && let Some(why) = self.not_before(target, site)
                            {
                                report(
                                    codes::STEP_NOT_BEFORE,
                                    format!(
                                        "step '{}' does not run before this step: {why}, expected a step that finishes earlier",
                                        crate::schema::excerpt(id)
                                    ),
                                );
                            }
                        }
                    }
                }
                "inputs" => {
                    if mode != Mode::AtGate
                        && let Some(name) = second
                        && !names.inputs.contains(name)
                    {
                        let hint = suggest::hint(name, names.inputs.iter().map(String::as_str));
                        report(
                            codes::UNKNOWN_INPUT,
                            format!(
                                "unknown input '{}', expected an input declared in spec.inputs{hint}",
                                crate::schema::excerpt(name)
                            ),
                        );
                    }
                }
                "secrets" => {
                    if mode != Mode::AtGate
                        && let Some(name) = second
                        && !names.secrets.contains(name)
                    {
                        let hint = suggest::hint(name, names.secrets.iter().map(String::as_str));
                        report(
                            codes::UNKNOWN_SECRET,
                            format!(
                                "unknown secret '{}', expected a secret declared in spec.secrets{hint}",
                                crate::schema::excerpt(name)
                            ),
                        );
                    }
                }
                "run" => {}
                _ if mode == Mode::Definition => {}
                other if vars.iter().any(|v| v == other) => {}
                other => {
                    let candidates = CONTEXT_ROOTS
                        .iter()
                        .copied()
                        .chain(vars.iter().map(String::as_str));
                    let hint = suggest::hint(other, candidates);
                    report(
                        codes::UNKNOWN_VARIABLE,
                        format!(
                            "unknown context variable '{}'{hint}",
                            crate::schema::excerpt(other)
                        ),
                    );
                }
            }
        }
    }
}
