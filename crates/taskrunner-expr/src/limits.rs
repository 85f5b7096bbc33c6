//! Static limits on expression source and AST size, and the evaluation [`Limits`].

/// Longest accepted expression source, in bytes (SPEC §2).
pub const EXPR_BYTES_MAX: usize = 4096;
/// Deepest accepted AST nesting and evaluation recursion.
pub const EXPR_DEPTH_MAX: usize = 128;

/// Evaluation limits. `Default` gives the limits used by the planner and engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Abstract work units; every AST node visit and every element touched costs fuel.
    pub fuel: u64,
    /// Deepest evaluation recursion.
    pub depth_max: usize,
    /// Cap on the size of any intermediate/produced value (approximate serialized bytes).
    pub result_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000,
            depth_max: EXPR_DEPTH_MAX,
            result_bytes_max: 16 * 1024 * 1024,
        }
    }
}
