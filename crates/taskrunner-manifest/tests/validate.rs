//! Validation behaviour: every problem collected, with codes, paths and positions.

mod common;

use common::VALID;
use taskrunner_manifest::{Diagnostic, LoopItems, StepKind, codes, parse};

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match parse(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(d) => d.into_iter().collect(),
    }
}

fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "fixture lacks {from:?}");
    VALID.replacen(from, to, 1)
}

fn has(diags: &[Diagnostic], code: &str, path: &str) -> bool {
    diags.iter().any(|d| d.code == code && d.path == path)
}

#[track_caller]
fn expect_one(yaml: &str, code: &str, path: &str) -> Diagnostic {
    let diags = errors(yaml);
    assert!(
        has(&diags, code, path),
        "want {code} at {path}, got:\n{diags:#?}"
    );
    diags
        .into_iter()
        .find(|d| d.code == code && d.path == path)
        .expect("found")
}

#[test]
fn valid_manifest_parses() {
    let m = match parse(VALID) {
        Ok(m) => m,
        Err(d) => panic!("{d}"),
    };
    assert_eq!(m.metadata().name, "scan-deploy");
    assert_eq!(m.inputs().len(), 3);
    assert_eq!(m.approvals()[0].expires_after_seconds, Some(86_400));
    assert_eq!(m.policies()[0].version, "1");
    assert_eq!(m.failure().max_attempts, 3);
    assert_eq!(m.steps().len(), 8);
    let StepKind::Loop(l) = &m.steps()[5].kind else {
        panic!("loop")
    };
    assert_eq!(
        l.items,
        LoopItems::Range {
            start: 0,
            end: 5,
            step: 1
        }
    );
    assert_eq!((l.iterator.as_str(), l.index.as_str()), ("attempt", "i"));
    assert_eq!(
        m.steps()[7].when.as_ref().map(|e| e.source()),
        Some("`true`")
    );
}

#[test]
fn all_errors_are_collected() {
    let yaml = VALID
        .replacen("kind: TaskPack", "kind: Taskpack", 1)
        .replacen("name: scan-deploy", "name: Scan_Deploy", 1)
        .replacen(
            "      requiredApprovals: 2",
            "      requiredApprovals: 0",
            1,
        )
        .replacen("uses: builtin:lint", "usse: builtin:lint", 1)
        .replacen(
            "approval: {id: security-review,",
            "approval: {id: security-reveiw,",
            1,
        );
    let diags = errors(&yaml);
    let want = [
        (codes::INVALID_VALUE, "kind"),
        (codes::INVALID_NAME, "metadata.name"),
        (codes::OUT_OF_RANGE, "spec.approvals[0].requiredApprovals"),
        (
            codes::UNKNOWN_FIELD,
            "spec.steps[1].parallel.steps[0].run.usse",
        ),
        (
            codes::MISSING_FIELD,
            "spec.steps[1].parallel.steps[0].run.uses",
        ),
        (codes::UNKNOWN_APPROVAL, "spec.steps[3].gate.approval.id"),
    ];
    for (code, path) in want {
        assert!(
            has(&diags, code, path),
            "want {code} at {path}, got:\n{diags:#?}"
        );
    }
    assert_eq!(diags.len(), want.len(), "{diags:#?}");
}

#[test]
fn unknown_field_did_you_mean() {
    let d = expect_one(
        &edit("      timeoutSeconds: 30", "      timeout: 30"),
        codes::UNKNOWN_FIELD,
        "spec.steps[1].parallel.steps[1].timeout",
    );
    assert_eq!(
        d.message,
        "unknown field 'timeout' (did you mean 'timeoutSeconds'?)"
    );
    assert_eq!((d.line, d.column), (Some(67), Some(13)));
    let d = expect_one(
        &edit("  inputs:", "  input:"),
        codes::UNKNOWN_FIELD,
        "spec.input",
    );
    assert!(d.message.contains("did you mean 'inputs'"), "{}", d.message);
}

#[test]
fn nested_step_paths() {
    let d = expect_one(
        &edit("uses: acme/test-runner", "uses: Acme"),
        codes::INVALID_USES,
        "spec.steps[1].parallel.steps[1].run.uses",
    );
    assert!(d.line.is_some());
    expect_one(
        &edit("uses: builtin:deploy", "uses: 5"),
        codes::WRONG_TYPE,
        "spec.steps[4].map.step.run.uses",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let d = expect_one(
        &edit("maxIterations: 10", "maxIterations: 1.5"),
        codes::WRONG_TYPE,
        "spec.steps[5].loop.maxIterations",
    );
    assert_eq!(d.message, "expected an integer, found a number");
    let d = expect_one(
        &edit("maxIterations: 10", "maxIterations: \"3\""),
        codes::WRONG_TYPE,
        "spec.steps[5].loop.maxIterations",
    );
    assert_eq!(d.message, "expected an integer, found a string");
    let diags = errors(&edit(
        "  steps:\n    - id: scan",
        "  steps:\n    x: 1\n    y:\n    - id: scan",
    ));
    // Only the wrong type: no "unknown step" noise from references to the unreadable steps.
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(
        (diags[0].code, diags[0].path.as_str()),
        (codes::WRONG_TYPE, "spec.steps")
    );
    assert_eq!(
        diags[0].message,
        "expected a sequence of steps, found a mapping"
    );
}

#[test]
fn duplicate_step_id_reported_at_later_occurrence() {
    let yaml = edit("          - id: test\n", "          - id: scan\n");
    let d = expect_one(
        &yaml,
        codes::DUPLICATE_STEP_ID,
        "spec.steps[1].parallel.steps[1].id",
    );
    assert!(
        d.message.contains("first defined at spec.steps[0].id"),
        "{}",
        d.message
    );
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let d = expect_one(
        &edit("  license: MIT\n", "  license: [MIT\n"),
        codes::YAML_SYNTAX,
        "",
    );
    assert!(d.line.is_some() && d.column.is_some(), "{d:?}");
    assert!(d.message.starts_with("invalid yaml: "), "{}", d.message);
}

#[test]
fn duplicate_yaml_key_has_line_and_column() {
    let yaml = edit("  license: MIT\n", "  license: MIT\n  license: Apache\n");
    let d = expect_one(&yaml, codes::DUPLICATE_KEY, "metadata.license");
    assert_eq!((d.line, d.column), (Some(10), Some(3)));
    assert_eq!(
        d.message,
        "duplicate mapping key 'license' (first at line 9, column 3)"
    );
}

#[test]
fn duplicate_keys_are_reported_at_their_paths_and_validation_continues() {
    let yaml = edit(
        "          target: \"{{ inputs.target }}\"\n",
        "          target: \"{{ inputs.target }}\"\n          target: other\n",
    )
    .replacen("kind: TaskPack", "kind: Taskpack", 1)
    .replacen(
        "nested: {list:",
        "nested: {1: a, \"1\": z, true: b, \"true\": y, list:",
        1,
    );
    let diags = errors(&yaml);
    let got: Vec<_> = diags
        .iter()
        .map(|d| (d.code, d.path.as_str(), d.line))
        .collect();
    assert_eq!(
        got,
        [
            (codes::INVALID_VALUE, "kind", Some(2)),
            (
                codes::DUPLICATE_KEY,
                "spec.steps[0].run.with.target",
                Some(58)
            ),
            (
                codes::DUPLICATE_KEY,
                "spec.steps[0].run.with.nested.1",
                Some(60)
            ),
            (
                codes::DUPLICATE_KEY,
                "spec.steps[0].run.with.nested.true",
                Some(60)
            ),
        ],
        "{diags:#?}"
    );
    // A duplicate alone still fails the manifest.
    let d = expect_one(
        &edit("  license: MIT\n", "  license: MIT\n  license: MIT\n"),
        codes::DUPLICATE_KEY,
        "metadata.license",
    );
    assert_eq!(d.line, Some(10));
}

#[test]
fn integer_literals_beyond_64_bits_stay_integers() {
    // Both literals used to become the float 1.2345678901234568e22 and plan alike.
    for literal in [
        "12345678901234567890123",
        "12345678901234567890124",
        "-99999999999999999999",
        "0xFFFFFFFFFFFFFFFFFFFFFF",
    ] {
        let yaml = edit(
            "          nested:",
            &format!("          big: {literal}\n          nested:"),
        );
        let d = expect_one(&yaml, codes::OUT_OF_RANGE, "spec.steps[0].run.with.big");
        assert!(
            d.message.starts_with(&format!(
                "integer {} is outside the range ±2^53",
                if literal.starts_with("0x") {
                    "309485009821345068724781055"
                } else {
                    literal
                }
            )),
            "{}",
            d.message
        );
        assert_eq!(d.line, Some(59));
    }
    // Defaults, static loop items and typed fields too.
    let yaml = edit(
        "      default: 2\n",
        "      default: 12345678901234567890123\n",
    )
    .replacen(
        "items: {range: {start: 0, end: 5}}",
        "items: {static: [1, 99999999999999999999999]}",
        1,
    )
    .replacen(
        "maxIterations: 10",
        "maxIterations: 99999999999999999999999",
        1,
    );
    let diags = errors(&yaml);
    for path in [
        "spec.inputs[1].default",
        "spec.steps[5].loop.items.static[1]",
        "spec.steps[5].loop.maxIterations",
    ] {
        assert!(has(&diags, codes::OUT_OF_RANGE, path), "{path}: {diags:#?}");
    }
    // A huge literal does not overflow anything.
    let yaml = edit(
        "          nested:",
        &format!("          big: {}\n          nested:", "9".repeat(500)),
    );
    let d = expect_one(&yaml, codes::OUT_OF_RANGE, "spec.steps[0].run.with.big");
    assert!(d.message.contains('…'), "{}", d.message);
}

#[test]
fn non_finite_floats_are_reported_at_their_paths() {
    let yaml = edit(
        "          nested:",
        "          a: .inf\n          b: -.Inf\n          c: .nan\n          nested:",
    )
    .replacen("      default: [eu, us]", "      default: [1e400]", 1)
    .replacen("kind: TaskPack", "kind: Taskpack", 1);
    let diags = errors(&yaml);
    let got: Vec<_> = diags
        .iter()
        .map(|d| (d.code, d.path.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                codes::INVALID_VALUE,
                "kind",
                "expected 'TaskPack', found 'Taskpack'"
            ),
            (
                codes::OUT_OF_RANGE,
                "spec.inputs[2].default[0]",
                ".inf is not a finite number, expected a finite number"
            ),
            (
                codes::OUT_OF_RANGE,
                "spec.steps[0].run.with.a",
                ".inf is not a finite number, expected a finite number"
            ),
            (
                codes::OUT_OF_RANGE,
                "spec.steps[0].run.with.b",
                "-.inf is not a finite number, expected a finite number"
            ),
            (
                codes::OUT_OF_RANGE,
                "spec.steps[0].run.with.c",
                ".nan is not a finite number, expected a finite number"
            ),
        ],
        "{diags:#?}"
    );
}

#[test]
fn merge_keys_are_unknown_fields() {
    let yaml = edit(
        "    - id: finish\n      when: true\n",
        "    - id: finish\n      <<: {when: true}\n",
    );
    let d = expect_one(&yaml, codes::UNKNOWN_FIELD, "spec.steps[7].<<");
    assert_eq!(
        d.message,
        "unknown field '<<' (YAML merge keys are not supported; use anchors and aliases)"
    );
    // Elsewhere `<<` is an ordinary key of the value.
    let m = parse(&edit(
        "          nested:",
        "          <<: 1\n          nested:",
    ))
    .unwrap_or_else(|d| panic!("{d}"));
    let StepKind::Run(run) = &m.steps()[0].kind else {
        panic!("run")
    };
    assert!(run.with.contains_key("<<"));
}

#[test]
fn yaml_core_schema() {
    // `yes` stays a string, so it is not a boolean.
    let d = expect_one(
        &edit(
            "  failure:\n    retries: {maxAttempts: 3, backoffSeconds: 5}\n    continueOnError: false",
            "  failure:\n    continueOnError: yes",
        ),
        codes::WRONG_TYPE,
        "spec.failure.continueOnError",
    );
    assert_eq!(
        d.message,
        "expected a boolean (true or false), found a string"
    );
    // A quoted number stays a string; the plain one is an integer.
    expect_one(
        &edit("version: 1.0.0", "version: 1.0"),
        codes::WRONG_TYPE,
        "metadata.version",
    );
}

#[test]
fn integers_beyond_2_pow_53_are_errors() {
    let yaml = edit(
        "          nested:",
        "          big: 9007199254740993\n          nested:",
    );
    let d = expect_one(&yaml, codes::OUT_OF_RANGE, "spec.steps[0].run.with.big");
    assert!(d.message.contains("±2^53"), "{}", d.message);
}

#[test]
fn kind_keys() {
    expect_one(
        &edit(
            "    - id: finish\n      when: true\n      run: {uses: builtin:echo, with: {msg: \"{{ steps.notify.status }} {{ steps.\\\"per-region\\\".outputs }}\"}}",
            "    - id: finish",
        ),
        codes::EXACTLY_ONE,
        "spec.steps[7]",
    );
    expect_one(
        &edit(
            "      run:\n        uses: builtin:scan",
            "      gate: {approval: {id: security-review}}\n      run:\n        uses: builtin:scan",
        ),
        codes::EXACTLY_ONE,
        "spec.steps[0].gate",
    );
}

#[test]
fn gates() {
    expect_one(
        &edit("policy: no-critical", "policy: no-critcal"),
        codes::UNKNOWN_POLICY,
        "spec.steps[2].gate.policy.policy",
    );
    expect_one(
        &edit("          overrideApproval: security-review\n", ""),
        codes::OVERRIDE_APPROVAL_MISSING,
        "spec.steps[2].gate.policy.overrideApproval",
    );
    expect_one(
        &edit("failureAction: requestOverride", "failureAction: branch"),
        codes::ON_FAILURE_MISMATCH,
        "spec.steps[2].gate.policy.onFailure",
    );
    let d = expect_one(
        &edit("failureAction: requestOverride", "failureAction: abrt"),
        codes::INVALID_VALUE,
        "spec.steps[2].gate.policy.failureAction",
    );
    assert!(d.message.contains("did you mean 'abort'"), "{}", d.message);
}

#[test]
fn loops() {
    let d = expect_one(
        &edit(
            "{range: {start: 0, end: 5}}",
            "{range: {start: 0, end: 5, step: 0}}",
        ),
        codes::OUT_OF_RANGE,
        "spec.steps[5].loop.items.range.step",
    );
    assert!(d.message.contains("non-zero"));
    expect_one(
        &edit(
            "{range: {start: 0, end: 5}}",
            "{range: {start: 0, end: 50}}",
        ),
        codes::MAX_ITERATIONS,
        "spec.steps[5].loop.items.range",
    );
    expect_one(
        &edit(
            "{range: {start: 0, end: 5}}",
            "{static: [1], expression: inputs.regions}",
        ),
        codes::EXACTLY_ONE,
        "spec.steps[5].loop.items",
    );
    expect_one(
        &edit("iterator: attempt", "iterator: inputs"),
        codes::ITERATION_VARIABLE,
        "spec.steps[5].loop.iterator",
    );
    expect_one(
        &edit("index: i", "index: attempt"),
        codes::ITERATION_VARIABLE,
        "spec.steps[5].loop.index",
    );
    expect_one(
        &edit("maxIterations: 10", "maxIterations: 10001"),
        codes::OUT_OF_RANGE,
        "spec.steps[5].loop.maxIterations",
    );
}

#[test]
fn expression_syntax_error_has_offset() {
    let d = expect_one(
        &edit(
            "when: \"inputs.replicas > `1`\"",
            "when: \"inputs.replicas >\"",
        ),
        codes::EXPR_SYNTAX,
        "spec.steps[3].when",
    );
    assert!(
        d.message.starts_with("invalid expression at offset "),
        "{}",
        d.message
    );
    let d = expect_one(
        &edit(
            "target: \"{{ inputs.target }}\"",
            "target: \"x {{ inputs. }}\"",
        ),
        codes::TEMPLATE_SYNTAX,
        "spec.steps[0].run.with.target",
    );
    assert!(
        d.message.starts_with("invalid template at offset "),
        "{}",
        d.message
    );
}

#[test]
fn context_variables() {
    let d = expect_one(
        &edit(
            "target: \"{{ inputs.target }}\"",
            "target: \"{{ input.target }}\"",
        ),
        codes::UNKNOWN_VARIABLE,
        "spec.steps[0].run.with.target",
    );
    assert_eq!(
        d.message,
        "unknown context variable 'input' (did you mean 'inputs'?)"
    );
    let d = expect_one(
        &edit(
            "target: \"{{ inputs.target }}\"",
            "target: \"{{ inputs.targt }}\"",
        ),
        codes::UNKNOWN_INPUT,
        "spec.steps[0].run.with.target",
    );
    assert!(d.message.contains("did you mean 'target'"), "{}", d.message);
    expect_one(
        &edit("{{ secrets.token }}", "{{ secrets.tokn }}"),
        codes::UNKNOWN_SECRET,
        "spec.steps[0].run.with.token",
    );
    // Iteration variables only inside their body.
    expect_one(
        &edit(
            "{uses: builtin:lint, with: {findings: \"{{ steps.scan.outputs }}\"}}",
            "{uses: builtin:lint, with: {findings: \"{{ attempt }}\"}}",
        ),
        codes::UNKNOWN_VARIABLE,
        "spec.steps[1].parallel.steps[0].run.with.findings",
    );
}

#[test]
fn step_references() {
    // Later step.
    let d = expect_one(
        &edit(
            "target: \"{{ inputs.target }}\"",
            "target: \"{{ steps.finish.outputs }}\"",
        ),
        codes::STEP_NOT_BEFORE,
        "spec.steps[0].run.with.target",
    );
    assert!(d.message.contains("runs after"), "{}", d.message);
    // Unknown step.
    expect_one(
        &edit(
            "target: \"{{ inputs.target }}\"",
            "target: \"{{ steps.nope.outputs }}\"",
        ),
        codes::UNKNOWN_STEP,
        "spec.steps[0].run.with.target",
    );
    // Parallel sibling.
    let d = expect_one(
        &edit(
            "run: {uses: acme/test-runner}",
            "run: {uses: acme/test-runner, with: {x: \"{{ steps.lint.outputs }}\"}}",
        ),
        codes::STEP_NOT_BEFORE,
        "spec.steps[1].parallel.steps[1].run.with.x",
    );
    assert!(d.message.contains("parallel"), "{}", d.message);
    // Inside a loop body, from outside.
    let d = expect_one(
        &edit("{{ steps.poll.outputs }}", "{{ steps.check.outputs }}"),
        codes::STEP_NOT_BEFORE,
        "spec.steps[6].conditional.branches[0].steps[0].run.with.poll",
    );
    assert!(
        d.message.contains("use steps.poll.outputs"),
        "{}",
        d.message
    );
    // Itself.
    expect_one(
        &edit("{{ steps.poll.outputs }}", "{{ steps.notify.outputs }}"),
        codes::STEP_NOT_BEFORE,
        "spec.steps[6].conditional.branches[0].steps[0].run.with.poll",
    );
    // Different branch.
    expect_one(
        &edit(
            "- id: fallback\n            run: {uses: builtin:echo}",
            "- id: fallback\n            run: {uses: builtin:echo, with: {x: \"{{ steps.notify.outputs }}\"}}",
        ),
        codes::STEP_NOT_BEFORE,
        "spec.steps[6].conditional.else[0].run.with.x",
    );
    // Policy references are checked at the gate using the policy.
    let yaml = VALID.replacen(
        "    - id: scan\n      run:",
        "    - id: early\n      gate: {policy: {policy: no-critical}}\n    - id: scan\n      run:",
        1,
    );
    let d = expect_one(
        &yaml,
        codes::STEP_NOT_BEFORE,
        "spec.steps[0].gate.policy.policy",
    );
    assert!(
        d.message.starts_with("in spec.policies[0].rule: "),
        "{}",
        d.message
    );
}

#[test]
fn outputs_and_paths() {
    expect_one(
        &edit(
            "path: \"reports/{{ inputs.target }}.json\"",
            "path: ../escape.json",
        ),
        codes::INVALID_OUTPUT_PATH,
        "spec.outputs[0].path",
    );
    expect_one(
        &edit(
            "path: \"reports/{{ inputs.target }}.json\"",
            "path: /etc/passwd",
        ),
        codes::INVALID_OUTPUT_PATH,
        "spec.outputs[0].path",
    );
    expect_one(
        &edit("      expression: steps.scan.outputs\n", ""),
        codes::MISSING_FIELD,
        "spec.outputs[1].expression",
    );
}

#[test]
fn inputs_definitions() {
    expect_one(
        &edit("default: 2", "default: two"),
        codes::INPUT_DEFAULT_MISMATCH,
        "spec.inputs[1].default",
    );
    expect_one(
        &edit("default: 2", "default: 20"),
        codes::INPUT_DEFAULT_MISMATCH,
        "spec.inputs[1].default",
    );
    expect_one(
        &edit(
            "schema: {minimum: 1, maximum: 10}",
            "schema: {$ref: \"https://example.com/s.json\"}",
        ),
        codes::INPUT_SCHEMA_INVALID,
        "spec.inputs[1].schema",
    );
    expect_one(
        &edit("    - name: regions", "    - name: target"),
        codes::DUPLICATE_NAME,
        "spec.inputs[2].name",
    );
    expect_one(
        &edit("type: integer", "type: int"),
        codes::INVALID_VALUE,
        "spec.inputs[1].type",
    );
}

#[test]
fn sandbox_and_misc() {
    expect_one(
        &edit("\"api.example.com:443\"", "\"api.example.com:99999\""),
        codes::INVALID_HOST,
        "spec.sandbox.egressAllowlist[1]",
    );
    expect_one(
        &edit("expiresAfter: 24h", "expiresAfter: 1w"),
        codes::INVALID_DURATION,
        "spec.approvals[0].expiresAfter",
    );
    expect_one(
        &edit("version: 1.0.0", "version: 1.0.0-01"),
        codes::INVALID_VERSION,
        "metadata.version",
    );
    expect_one(
        &edit("apiVersion: stellaops.io/pack.v1", "apiVersion: v1"),
        codes::INVALID_VALUE,
        "apiVersion",
    );
    expect_one(
        &edit("mode: networked", "mode: open"),
        codes::INVALID_VALUE,
        "spec.sandbox.mode",
    );
    expect_one("- a\n- b\n", codes::WRONG_TYPE, "");
}

#[test]
fn too_large_and_too_many_steps() {
    let big = format!(
        "{}\n# {}",
        VALID,
        "x".repeat(taskrunner_manifest::MANIFEST_BYTES_MAX)
    );
    expect_one(&big, codes::TOO_LARGE, "");
}

#[test]
fn alias_bomb_is_rejected() {
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        let items = [prev.as_str(); 9].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    let d = expect_one(&yaml, codes::BUDGET, "");
    assert!(d.message.contains("alias expansion"), "{}", d.message);
    assert!(d.message.contains("limit exceeded"), "{}", d.message);
}

#[test]
fn map_items_forms() {
    let yaml = edit("items: inputs.regions", "items: [eu, \"x`y\"]");
    let m = parse(&yaml).unwrap_or_else(|d| panic!("{d}"));
    let StepKind::Map(map) = &m.steps()[4].kind else {
        panic!("map")
    };
    assert_eq!(map.items.source(), "`[\"eu\",\"x\\`y\"]`");
    let yaml = edit("items: inputs.regions", "items: \"{{ inputs.regions }}\"");
    parse(&yaml).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn policy_and_approval_texts_see_the_gate_iteration_variables() {
    // Used only inside a loop whose iterator is `attempt`: fine.
    let yaml = edit(
        "      message: \"{{ steps.scan.outputs.critical }} critical findings\"",
        "      message: \"attempt {{ attempt }}: {{ steps.scan.outputs.critical }}\"",
    )
    .replacen(
        "      reasonTemplate: \"approve deploy of {{ inputs.target }}\"",
        "      reasonTemplate: \"approve {{ attempt }}\"",
        1,
    )
    .replacen(
        "          - id: check\n            run: {uses: builtin:http.get, with: {attempt: \"{{ attempt }}\"}}\n",
        "          - id: check\n            run: {uses: builtin:http.get, with: {attempt: \"{{ attempt }}\"}}\n          - id: loop-gate\n            gate: {policy: {policy: no-critical, failureAction: requestOverride, overrideApproval: security-review}}\n          - id: loop-approve\n            gate: {approval: {id: security-review}}\n",
        1,
    );
    // The top-level gates use them outside the loop: reported there, with the definition path.
    let diags = errors(&yaml);
    let got: Vec<_> = diags
        .iter()
        .map(|d| (d.code, d.path.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                codes::UNKNOWN_VARIABLE,
                "spec.steps[2].gate.policy.policy",
                "in spec.policies[0].message: unknown context variable 'attempt'"
            ),
            (
                codes::UNKNOWN_VARIABLE,
                "spec.steps[2].gate.policy.overrideApproval",
                "in spec.approvals[0].reasonTemplate: unknown context variable 'attempt'"
            ),
            (
                codes::UNKNOWN_VARIABLE,
                "spec.steps[3].gate.approval.id",
                "in spec.approvals[0].reasonTemplate: unknown context variable 'attempt'"
            ),
        ],
        "{diags:#?}"
    );
    // Without the top-level gates, the manifest is valid.
    let inner_only = yaml
        .replacen(
            "    - id: policy\n      gate:\n        policy:\n          policy: no-critical\n          failureAction: requestOverride\n          overrideApproval: security-review\n",
            "",
            1,
        )
        .replacen(
            "    - id: approve\n      when: \"inputs.replicas > `1`\"\n      gate:\n        approval: {id: security-review, message: \"deploy {{ inputs.target }}?\"}\n",
            "",
            1,
        );
    parse(&inner_only).unwrap_or_else(|d| panic!("{d}"));
    // A policy no gate uses: no iteration variables in scope.
    let unused = edit(
        "      message: \"{{ steps.scan.outputs.critical }} critical findings\"",
        "      message: \"{{ steps.scan.outputs.critical }} critical findings\"\n    - id: unused\n      rule: \"item == `1`\"",
    );
    let d = expect_one(&unused, codes::UNKNOWN_VARIABLE, "spec.policies[1].rule");
    assert_eq!(d.message, "unknown context variable 'item'");
    // Input and secret names are still checked once, at the definition.
    let d = expect_one(
        &edit(
            "approve deploy of {{ inputs.target }}",
            "approve deploy of {{ inputs.targt }}",
        ),
        codes::UNKNOWN_INPUT,
        "spec.approvals[0].reasonTemplate",
    );
    assert!(
        d.message.starts_with("unknown input 'targt'"),
        "{}",
        d.message
    );
}

#[test]
fn parallel_reports_both_empty_steps_and_max_parallel() {
    let yaml = edit(
        "        maxParallel: 2\n        steps:\n          - id: lint\n            run: {uses: builtin:lint, with: {findings: \"{{ steps.scan.outputs }}\"}}\n          - id: test\n            timeoutSeconds: 30\n            retries: {maxAttempts: 2}\n            run: {uses: acme/test-runner}\n",
        "        maxParallel: 0\n        steps: []\n",
    );
    let diags = errors(&yaml);
    assert!(
        has(
            &diags,
            codes::OUT_OF_RANGE,
            "spec.steps[1].parallel.maxParallel"
        ),
        "{diags:#?}"
    );
    assert!(
        has(&diags, codes::MISSING_FIELD, "spec.steps[1].parallel.steps"),
        "{diags:#?}"
    );
}

#[test]
fn duplicate_input_name_still_checks_the_default() {
    let yaml = edit("    - name: regions\n", "    - name: replicas\n").replacen(
        "      default: [eu, us]",
        "      default: 5",
        1,
    );
    let diags = errors(&yaml);
    assert!(
        has(&diags, codes::DUPLICATE_NAME, "spec.inputs[2].name"),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            codes::INPUT_DEFAULT_MISMATCH,
            "spec.inputs[2].default"
        ),
        "{diags:#?}"
    );
}

#[test]
fn one_problem_does_not_hide_the_rest_of_a_step() {
    // An invalid `uses` does not stop checking `with`.
    let diags = errors(&edit("uses: builtin:scan", "uses: Scan").replacen(
        "{{ secrets.token }}",
        "{{ secrets.tokn }}",
        1,
    ));
    assert!(
        has(&diags, codes::INVALID_USES, "spec.steps[0].run.uses"),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            codes::UNKNOWN_SECRET,
            "spec.steps[0].run.with.token"
        ),
        "{diags:#?}"
    );
    // Every range bound is checked.
    let diags = errors(&edit(
        "items: {range: {start: 0, end: 5}}",
        "items: {range: {start: x, end: y, step: 0}}",
    ));
    assert!(
        has(
            &diags,
            codes::WRONG_TYPE,
            "spec.steps[5].loop.items.range.start"
        ),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            codes::WRONG_TYPE,
            "spec.steps[5].loop.items.range.end"
        ),
        "{diags:#?}"
    );
    // Two kinds (or two gate kinds): each is still checked.
    let diags = errors(&edit(
        "    - id: finish\n      when: true\n",
        "    - id: finish\n      when: true\n      gate: {approval: {id: nope}, policy: {policy: nope2}}\n",
    ));
    assert!(
        has(&diags, codes::EXACTLY_ONE, "spec.steps[7].gate"),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            codes::UNKNOWN_APPROVAL,
            "spec.steps[7].gate.approval.id"
        ),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            codes::UNKNOWN_POLICY,
            "spec.steps[7].gate.policy.policy"
        ),
        "{diags:#?}"
    );
}

#[test]
fn messages_say_integer_durations_and_truncate_long_values() {
    let d = expect_one(
        &edit("expiresAfter: 24h", "expiresAfter: 1.5h"),
        codes::INVALID_DURATION,
        "spec.approvals[0].expiresAfter",
    );
    assert!(
        d.message
            .contains("expected a positive integer followed by s, m, h or d"),
        "{}",
        d.message
    );
    let long = "x".repeat(5000);
    let d = expect_one(
        &edit("expiresAfter: 24h", &format!("expiresAfter: {long}")),
        codes::INVALID_DURATION,
        "spec.approvals[0].expiresAfter",
    );
    assert!(d.message.len() < 300, "{}", d.message);
    assert!(d.message.contains('…'), "{}", d.message);
}
