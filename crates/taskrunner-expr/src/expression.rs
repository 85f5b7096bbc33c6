//! [`Expression`]: a parsed JMESPath expression with its source text.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::analysis::{self, References};
use crate::ast::Node;
use crate::error::{EvalError, ParseError};
use crate::eval;
use crate::limits::Limits;
use crate::parser;

/// A parsed JMESPath expression; keeps its source text. Cloning is cheap (the AST is shared).
#[derive(Clone)]
pub struct Expression {
    source: String,
    ast: Arc<Node>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expression {}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expression {
    /// Parses an expression. Unknown function names and wrong argument counts are parse
    /// errors; error offsets are byte offsets into `source`.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        let ast = parser::parse(source)?;
        Ok(Expression {
            source: source.to_owned(),
            ast: Arc::new(ast),
        })
    }

    /// The source text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `context` with the default [`Limits`].
    pub fn evaluate(&self, context: &Value) -> Result<Value, EvalError> {
        self.evaluate_with(context, &Limits::default())
    }

    /// Evaluates against `context` within `limits`.
    pub fn evaluate_with(&self, context: &Value, limits: &Limits) -> Result<Value, EvalError> {
        eval::evaluate(&self.ast, context, limits)
    }

    /// The root field chains this expression reads (see [`References`]).
    pub fn references(&self) -> References {
        analysis::references(&self.ast)
    }
}
