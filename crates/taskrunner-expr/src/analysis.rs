//! Static analysis: which field chains of the root context an expression reads
//! ([`References`]), used by the planner to decide plan time vs run time.
//!
//! JMESPath has no way to name the root from inside a projection, filter or expression
//! reference (their `@` is an element), so only the parts evaluated against the root scope
//! can read the root. The analysis tracks, for each node, whether its result is exactly a
//! root field chain; a chain is recorded once something uses it other than by selecting a
//! further field.

use std::collections::BTreeSet;

use crate::ast::Node;

/// Where an expression reads the evaluation context (the root object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Field chains read from the root, e.g. `steps."a-b".outputs.x` gives
    /// `["steps", "a-b", "outputs", "x"]`. Each chain has at least one element.
    pub paths: BTreeSet<Vec<String>>,
    /// True when the expression uses the whole root (a bare `@` at root scope, `*` on the
    /// root, `keys(@)`, …), so any root key may be read.
    pub whole_root: bool,
}

impl References {
    /// The first segment of each path: the context variables the expression reads.
    pub fn roots(&self) -> BTreeSet<&str> {
        self.paths
            .iter()
            .filter_map(|p| p.first().map(String::as_str))
            .collect()
    }
}

/// What a node's result is, relative to the root.
#[derive(Debug, Clone)]
enum Origin {
    /// Exactly the root value at this field chain (empty: the root itself).
    Root(Vec<String>),
    /// Anything else (derived, element-relative or literal).
    Other,
}

/// Computes the references of an expression AST.
pub(crate) fn references(node: &Node) -> References {
    let mut refs = References::default();
    let origin = analyze(node, &Origin::Root(Vec::new()), &mut refs);
    consume(origin, &mut refs);
    refs
}

/// Records that a value of this origin is used as a whole.
fn consume(origin: Origin, refs: &mut References) {
    if let Origin::Root(path) = origin {
        if path.is_empty() {
            refs.whole_root = true;
        } else {
            refs.paths.insert(path);
        }
    }
}

fn analyze(node: &Node, current: &Origin, refs: &mut References) -> Origin {
    match node {
        Node::Identity => current.clone(),
        Node::Field(name) => match current {
            Origin::Root(path) => {
                let mut p = path.clone();
                p.push(name.clone());
                Origin::Root(p)
            }
            Origin::Other => Origin::Other,
        },
        Node::Index(_) | Node::Slice { .. } => {
            consume(current.clone(), refs);
            Origin::Other
        }
        Node::Literal(_) => Origin::Other,
        Node::Subexpr(items) => {
            let mut origin = current.clone();
            for item in items {
                origin = analyze(item, &origin, refs);
            }
            origin
        }
        Node::Projection { lhs, .. }
        | Node::ValueProjection { lhs, .. }
        | Node::FilterProjection { lhs, .. }
        | Node::Flatten(lhs) => {
            // The right-hand side, condition and flattened elements are element-relative.
            let base = analyze(lhs, current, refs);
            consume(base, refs);
            Origin::Other
        }
        Node::Compare { lhs, rhs, .. } | Node::Or(lhs, rhs) | Node::And(lhs, rhs) => {
            let l = analyze(lhs, current, refs);
            consume(l, refs);
            let r = analyze(rhs, current, refs);
            consume(r, refs);
            Origin::Other
        }
        Node::Not(inner) => {
            let o = analyze(inner, current, refs);
            consume(o, refs);
            Origin::Other
        }
        Node::Pipe(lhs, rhs) => {
            let left = analyze(lhs, current, refs);
            analyze(rhs, &left, refs)
        }
        Node::MultiList(items) => {
            for item in items {
                let o = analyze(item, current, refs);
                consume(o, refs);
            }
            Origin::Other
        }
        Node::MultiHash(pairs) => {
            for (_, item) in pairs {
                let o = analyze(item, current, refs);
                consume(o, refs);
            }
            Origin::Other
        }
        Node::Function { args, .. } => {
            for arg in args {
                // Expression-reference bodies run against array elements, not the root.
                if !matches!(arg, Node::Expref(_)) {
                    let o = analyze(arg, current, refs);
                    consume(o, refs);
                }
            }
            Origin::Other
        }
        Node::Expref(_) => Origin::Other,
    }
}
