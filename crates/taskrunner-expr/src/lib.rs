//! JMESPath expressions and `{{ … }}` templates (SPEC §2).
//!
//! This crate owns the expression language: parsing with byte offsets in errors, bounded
//! evaluation (fuel, depth, result size), JMESPath truthiness, templates, and the static
//! analysis the planner uses to decide plan time vs run time (`Expression::references`).
//! It is pure: no I/O, no clock, no randomness, and it never panics on any input.
//!
//! The JMESPath implementation is complete per the jmespath.org specification (checked by
//! the compliance suite in `tests/compliance.rs`). Unknown function names and wrong
//! argument counts are reported at parse time (messages start with "unknown function" and
//! "wrong number of arguments").
//!
//! Two deliberate differences from the jmespath.py reference parser, neither exercised by
//! the compliance suite:
//! - `!` binds looser than `.`, `[` and function calls (but tighter than comparators,
//!   `&&`, `||`, `|`), so `!inputs.flag` is `!(inputs.flag)`, not `(!inputs).flag`;
//! - an object projection keeps projecting later path segments: `a.*.b.c` applies `b.c`
//!   to every value of `a` (jmespath.py issue 182).
//!
//! A backtick literal that is not valid JSON but is a plain word (`` `foo` ``) is the
//! legacy string form; anything else that is not JSON is a syntax error.
//!
//! Modules:
//! - `lexer`, `parser`, `ast`: source text to AST, with byte offsets and bounded recursion;
//! - `eval`, `functions`: the bounded evaluator and the built-in functions;
//! - `analysis`: [`References`];
//! - `template`: [`Template`];
//! - `value`: truthiness, text rendering and number helpers.

mod analysis;
mod ast;
mod error;
mod eval;
mod expression;
mod functions;
mod lexer;
mod limits;
mod parser;
mod template;
mod value;

pub use serde_json::Value;

pub use crate::analysis::References;
pub use crate::error::{EvalError, ParseError};
pub use crate::expression::Expression;
pub use crate::limits::{EXPR_BYTES_MAX, EXPR_DEPTH_MAX, Limits};
pub use crate::template::{Template, TemplatePart};
pub use crate::value::{is_truthy, render_text};
