//! Stable codes of plan errors (`TR-P…`), each with a page under `docs/errors/`.

/// A plan-time expression failed to evaluate.
pub(crate) const EVALUATION: &str = "TR-P0001";
/// Map/loop items did not evaluate to an array.
pub(crate) const ITEMS_NOT_ARRAY: &str = "TR-P0002";
/// A loop yields more items than its `maxIterations`.
pub(crate) const MAX_ITERATIONS: &str = "TR-P0003";
/// A map yields more than `MAP_ITEMS_MAX` items.
pub(crate) const MAP_ITEMS: &str = "TR-P0004";
/// The expanded plan holds more than `STEPS_MAX` steps.
pub(crate) const TOO_MANY_STEPS: &str = "TR-P0005";
/// A number outside ±2^53 would enter the plan.
pub(crate) const NUMBER_NOT_EXACT: &str = "TR-P0006";

/// A file output path known while planning leaves the workspace.
pub(crate) const PATH_ESCAPES: &str = "TR-P0007";

/// Every plan code with a one-line summary.
pub const ALL: &[(&str, &str)] = &[
    (EVALUATION, "a plan-time expression failed to evaluate"),
    (
        ITEMS_NOT_ARRAY,
        "map or loop items did not evaluate to an array",
    ),
    (
        MAX_ITERATIONS,
        "a loop yields more items than its maxIterations",
    ),
    (MAP_ITEMS, "a map yields more than 10,000 items"),
    (
        TOO_MANY_STEPS,
        "the expanded plan holds more steps than STEPS_MAX",
    ),
    (
        NUMBER_NOT_EXACT,
        "a number outside ±2^53 would enter the plan",
    ),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_code_has_a_page() {
        for (code, _) in super::ALL {
            let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/errors")
                .join(format!("{code}.md"));
            let text = std::fs::read_to_string(&page).unwrap_or_default();
            assert!(
                text.starts_with(&format!("# {code}:")),
                "{code} needs a page at {}",
                page.display()
            );
        }
    }
}
