//! `cargo xtask bench plan`: plan + hash of generated manifests with 100, 1,000 and 10,000
//! steps, printed as a ratio to YAML parsing alone of the same text, measured in the same run.
//!
//! A plain harness (no criterion): each figure is the median of repeated runs after a warm-up.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Map;

/// A pack of `steps` steps in compact flow style (10,000 steps must fit in the 1 MiB manifest
/// limit): sequential run steps with plan-time and run-time templates, and every tenth position
/// a parallel group of three.
fn generate(steps: usize) -> String {
    let mut out = String::from(
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: bench, version: 1.0.0}\nspec:\n  inputs: [{name: t, type: string, default: registry.example.com/app}]\n  steps:\n",
    );
    let mut made = 0;
    let mut i = 0;
    while made < steps {
        if i % 10 == 9 && steps - made >= 4 {
            out.push_str(&format!(
                "  - {{id: g{i}, parallel: {{maxParallel: 2, steps: ["
            ));
            for c in 0..3 {
                if c > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!(
                    "{{id: g{i}c{c}, run: {{uses: builtin:echo, with: {{m: \"{c} {{{{inputs.t}}}}\"}}}}}}"
                ));
            }
            out.push_str("]}}\n");
            made += 4;
        } else {
            let previous = if i % 10 != 0 {
                format!(", p: \"{{{{steps.s{}.outputs.x}}}}\"", i - 1)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  - {{id: s{i}, run: {{uses: builtin:shell, with: {{t: \"{{{{inputs.t}}}}:{i}\"{previous}}}}}}}\n"
            ));
            made += 1;
        }
        i += 1;
    }
    out
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    f(); // warm-up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    println!(
        "{:>7} {:>9} {:>11} {:>14} {:>15} {:>13} {:>11}",
        "steps", "bytes", "parse ms", "validate ms", "plan+hash ms", "plan/parse", "all/parse"
    );
    for steps in [100usize, 1_000, 10_000] {
        let yaml = generate(steps);
        let runs = if steps >= 10_000 { 7 } else { 21 };
        let inputs = Map::new();
        // Baseline: YAML parsing alone of the same text into a generic value.
        let parse = median(
            || {
                let v: serde_json::Value =
                    serde_saphyr::from_str(black_box(&yaml)).expect("generated YAML parses");
                black_box(v);
            },
            runs,
        );
        // Parse + validate into a Manifest (limits, every rule, expression parsing).
        let validate = median(
            || {
                let m =
                    taskrunner_manifest::parse(black_box(&yaml)).expect("generated pack is valid");
                black_box(m);
            },
            runs,
        );
        // Plan + canonical JSON + hash from a validated manifest.
        let manifest = taskrunner_manifest::parse(&yaml).expect("generated pack is valid");
        let plan = median(
            || {
                let p = taskrunner_plan::plan(black_box(&manifest), &inputs)
                    .expect("generated pack plans");
                black_box(p.hash().len());
            },
            runs,
        );
        let check = taskrunner_plan::plan(&manifest, &inputs).expect("generated pack plans");
        assert_eq!(check.step_count(), steps);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:>7} {:>9} {:>11.3} {:>14.3} {:>15.3} {:>12.2}x {:>10.2}x",
            steps,
            yaml.len(),
            ms(parse),
            ms(validate),
            ms(plan),
            plan.as_secs_f64() / parse.as_secs_f64(),
            (validate + plan).as_secs_f64() / parse.as_secs_f64(),
        );
    }
}
