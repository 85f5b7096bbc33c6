//! The expression AST produced by the parser and walked by the evaluator and the analysis.

use serde_json::Value;

use crate::functions::Func;

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// An AST node. Subexpression chains are flattened into [`Node::Subexpr`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// The current node: `@`, or the implicit left side of `[*]`, `[0]`, `*`, ….
    Identity,
    Field(String),
    Index(i64),
    Slice {
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    },
    Literal(Value),
    /// Applies each node to the result of the previous one.
    Subexpr(Vec<Node>),
    /// List projection: `rhs` applied to every element of the array `lhs`.
    Projection {
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    /// Object projection: `rhs` applied to every value of the object `lhs`.
    ValueProjection {
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    /// Filter projection.
    FilterProjection {
        lhs: Box<Node>,
        cond: Box<Node>,
        rhs: Box<Node>,
    },
    Flatten(Box<Node>),
    Compare {
        op: CmpOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Pipe(Box<Node>, Box<Node>),
    MultiList(Vec<Node>),
    MultiHash(Vec<(String, Node)>),
    Function {
        func: Func,
        args: Vec<Node>,
    },
    /// `&expr`: only meaningful as a function argument.
    Expref(Box<Node>),
}

impl Node {
    /// Pushes the direct children of this node onto `out`.
    fn children<'a>(&'a self, out: &mut Vec<&'a Node>) {
        match self {
            Node::Identity
            | Node::Field(_)
            | Node::Index(_)
            | Node::Slice { .. }
            | Node::Literal(_) => {}
            Node::Subexpr(items) | Node::MultiList(items) | Node::Function { args: items, .. } => {
                out.extend(items.iter());
            }
            Node::Projection { lhs, rhs }
            | Node::ValueProjection { lhs, rhs }
            | Node::Compare { lhs, rhs, .. }
            | Node::Or(lhs, rhs)
            | Node::And(lhs, rhs)
            | Node::Pipe(lhs, rhs) => {
                out.push(lhs);
                out.push(rhs);
            }
            Node::FilterProjection { lhs, cond, rhs } => {
                out.push(lhs);
                out.push(cond);
                out.push(rhs);
            }
            Node::Flatten(n) | Node::Not(n) | Node::Expref(n) => out.push(n),
            Node::MultiHash(pairs) => out.extend(pairs.iter().map(|(_, n)| n)),
        }
    }

    /// Depth of the tree (a leaf has depth 1), computed without recursion.
    pub(crate) fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack: Vec<(&Node, usize)> = vec![(self, 1)];
        let mut kids = Vec::new();
        while let Some((node, d)) = stack.pop() {
            max = max.max(d);
            kids.clear();
            node.children(&mut kids);
            stack.extend(kids.iter().map(|k| (*k, d + 1)));
        }
        max
    }
}
