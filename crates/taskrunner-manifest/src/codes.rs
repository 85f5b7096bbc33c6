//! The stable diagnostic codes (`TR-M…`), one per rule family, each with a page under
//! `docs/errors/<code>.md`. Codes are never renumbered or reused; retire one by leaving it here.

/// A YAML syntax error (the document is not well-formed YAML).
pub const YAML_SYNTAX: &str = "TR-M0001";
/// The manifest is larger than `MANIFEST_BYTES_MAX`.
pub const TOO_LARGE: &str = "TR-M0002";
/// A YAML reading budget was exceeded: alias expansion, nesting depth, event/node counts.
pub const BUDGET: &str = "TR-M0003";
/// The same key appears twice in one YAML mapping.
pub const DUPLICATE_KEY: &str = "TR-M0004";
/// More than one YAML document in the file.
pub const MULTIPLE_DOCUMENTS: &str = "TR-M0005";
/// A field that the schema does not know.
pub const UNKNOWN_FIELD: &str = "TR-M0010";
/// A field has the wrong YAML type.
pub const WRONG_TYPE: &str = "TR-M0011";
/// A required field is missing.
pub const MISSING_FIELD: &str = "TR-M0012";
/// A value that is not one of the allowed values (enums, `apiVersion`, `kind`).
pub const INVALID_VALUE: &str = "TR-M0013";
/// A name or id that does not match its required pattern.
pub const INVALID_NAME: &str = "TR-M0014";
/// `metadata.version` is not a semantic version 2.0.
pub const INVALID_VERSION: &str = "TR-M0015";
/// A number outside its allowed range.
pub const OUT_OF_RANGE: &str = "TR-M0016";
/// A duration such as `expiresAfter` is not `<n>s|m|h|d`.
pub const INVALID_DURATION: &str = "TR-M0017";
/// An `egressAllowlist` entry is not `host` or `host:port`.
pub const INVALID_HOST: &str = "TR-M0018";
/// A file output path is absolute or escapes the workspace with `..`.
pub const INVALID_OUTPUT_PATH: &str = "TR-M0019";
/// Two inputs, secrets, approvals, policies or outputs share a name.
pub const DUPLICATE_NAME: &str = "TR-M0020";
/// Two steps share an id.
pub const DUPLICATE_STEP_ID: &str = "TR-M0021";
/// Not exactly one of a set of mutually exclusive keys (step kind, gate kind, loop items).
pub const EXACTLY_ONE: &str = "TR-M0022";
/// `run.uses` is not `builtin:<name>` or a host executor name.
pub const INVALID_USES: &str = "TR-M0023";
/// The manifest declares more than `STEPS_MAX` steps.
pub const TOO_MANY_STEPS: &str = "TR-M0024";
/// A static list or range has more items than the loop's `maxIterations`.
pub const MAX_ITERATIONS: &str = "TR-M0025";
/// A loop/map iteration variable clashes with another variable or a reserved root.
pub const ITERATION_VARIABLE: &str = "TR-M0026";
/// An expression has a syntax error.
pub const EXPR_SYNTAX: &str = "TR-M0030";
/// A template has a syntax error.
pub const TEMPLATE_SYNTAX: &str = "TR-M0031";
/// An expression reads a context variable that does not exist.
pub const UNKNOWN_VARIABLE: &str = "TR-M0032";
/// An expression reads `inputs.<name>` for an undeclared input.
pub const UNKNOWN_INPUT: &str = "TR-M0033";
/// An expression reads `secrets.<name>` for an undeclared secret.
pub const UNKNOWN_SECRET: &str = "TR-M0034";
/// An expression reads `steps.<id>` for a step that does not exist.
pub const UNKNOWN_STEP: &str = "TR-M0035";
/// An expression reads `steps.<id>` for a step that does not run before it.
pub const STEP_NOT_BEFORE: &str = "TR-M0036";
/// A gate names an approval that `spec.approvals` does not define.
pub const UNKNOWN_APPROVAL: &str = "TR-M0037";
/// A gate names a policy that `spec.policies` does not define.
pub const UNKNOWN_POLICY: &str = "TR-M0038";
/// `failureAction: requestOverride` without `overrideApproval`.
pub const OVERRIDE_APPROVAL_MISSING: &str = "TR-M0039";
/// `onFailure` without `failureAction: branch`, or `branch` without `onFailure`.
pub const ON_FAILURE_MISMATCH: &str = "TR-M0040";
/// An input's JSON Schema is invalid, too large, or uses a non-local `$ref`.
pub const INPUT_SCHEMA_INVALID: &str = "TR-M0050";
/// An input's `default` does not match its `type` or `schema`.
pub const INPUT_DEFAULT_MISMATCH: &str = "TR-M0051";
/// A provided input is not declared by the pack.
pub const INPUT_UNDECLARED: &str = "TR-M0060";
/// A required input without default was not provided.
pub const INPUT_REQUIRED: &str = "TR-M0061";
/// A provided input value does not match the input's `type`.
pub const INPUT_TYPE_MISMATCH: &str = "TR-M0062";
/// A provided input value does not satisfy the input's `schema`.
pub const INPUT_SCHEMA_MISMATCH: &str = "TR-M0063";

/// Every code with a one-line summary, in code order.
pub const ALL: &[(&str, &str)] = &[
    (YAML_SYNTAX, "yaml syntax error"),
    (TOO_LARGE, "manifest larger than 1 MiB"),
    (
        BUDGET,
        "yaml alias expansion, nesting depth or size budget exceeded",
    ),
    (DUPLICATE_KEY, "duplicate key in a yaml mapping"),
    (MULTIPLE_DOCUMENTS, "more than one yaml document"),
    (UNKNOWN_FIELD, "unknown field"),
    (WRONG_TYPE, "field has the wrong type"),
    (MISSING_FIELD, "required field missing"),
    (INVALID_VALUE, "value not among the allowed values"),
    (INVALID_NAME, "name or id does not match its pattern"),
    (
        INVALID_VERSION,
        "metadata.version is not a semantic version",
    ),
    (OUT_OF_RANGE, "number outside its allowed range"),
    (INVALID_DURATION, "invalid duration"),
    (INVALID_HOST, "invalid egress allowlist entry"),
    (
        INVALID_OUTPUT_PATH,
        "file output path escapes the workspace",
    ),
    (
        DUPLICATE_NAME,
        "duplicate input, secret, approval, policy or output name",
    ),
    (DUPLICATE_STEP_ID, "duplicate step id"),
    (EXACTLY_ONE, "not exactly one of a set of exclusive keys"),
    (INVALID_USES, "invalid run.uses executor name"),
    (TOO_MANY_STEPS, "more steps than STEPS_MAX"),
    (MAX_ITERATIONS, "static loop items exceed maxIterations"),
    (ITERATION_VARIABLE, "iteration variable name clash"),
    (EXPR_SYNTAX, "expression syntax error"),
    (TEMPLATE_SYNTAX, "template syntax error"),
    (
        UNKNOWN_VARIABLE,
        "unknown context variable in an expression",
    ),
    (UNKNOWN_INPUT, "reference to an undeclared input"),
    (UNKNOWN_SECRET, "reference to an undeclared secret"),
    (UNKNOWN_STEP, "reference to a step that does not exist"),
    (
        STEP_NOT_BEFORE,
        "reference to a step that does not run before",
    ),
    (UNKNOWN_APPROVAL, "unknown approval id"),
    (UNKNOWN_POLICY, "unknown policy id"),
    (
        OVERRIDE_APPROVAL_MISSING,
        "requestOverride without overrideApproval",
    ),
    (
        ON_FAILURE_MISMATCH,
        "onFailure and failureAction branch disagree",
    ),
    (INPUT_SCHEMA_INVALID, "invalid input json schema"),
    (
        INPUT_DEFAULT_MISMATCH,
        "input default does not match type or schema",
    ),
    (INPUT_UNDECLARED, "provided input not declared"),
    (INPUT_REQUIRED, "required input missing"),
    (INPUT_TYPE_MISMATCH, "input value has the wrong type"),
    (INPUT_SCHEMA_MISMATCH, "input value fails its schema"),
];

/// The one-line summary of a code.
pub fn summary(code: &str) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_sorted() {
        for pair in ALL.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} then {}", pair[0].0, pair[1].0);
        }
    }
}
