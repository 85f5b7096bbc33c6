//! Hand measurement of the engine's cost on a large run-time map (not a benchmark gate):
//! `cargo run --release -p taskrunner-testkit --example map_cost -- [items] [maxParallel]`.
//!
//! Drives a [`Run`] directly (no journal, trace or invariant checks, which are O(n) per
//! event themselves): every `StartAttempt` succeeds at once with outputs = `with`, one
//! `AttemptFinished` per event, so the figure is the engine's own work per event.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use taskrunner_engine::{AttemptOutcome, Command, Event, Run, RunInfo, Secrets};
use taskrunner_testkit::T0;

fn main() {
    let mut args = std::env::args().skip(1);
    let items: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let max_parallel: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let yaml = format!(
        r#"apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: map-cost, version: 1.0.0}}
spec:
  inputs:
    - {{name: list, type: array}}
  steps:
    - {{id: gen, run: {{uses: "builtin:noop", with: {{items: "{{{{ inputs.list }}}}", tag: t}}}}}}
    - id: fan
      map:
        items: steps.gen.outputs.items
        maxParallel: {max_parallel}
        step: {{id: work, run: {{uses: "builtin:noop", with: {{i: "{{{{ item }}}}", g: "{{{{ steps.gen.outputs.tag }}}}"}}}}}}
    - {{id: after, run: {{uses: "builtin:noop", with: {{n: "{{{{ length(steps.fan.outputs) }}}}"}}}}}}
"#
    );
    let list: Vec<Value> = (0..items).map(|i| json!(i)).collect();
    let mut inputs = Map::new();
    inputs.insert("list".into(), Value::Array(list));
    let plan = Arc::new(taskrunner_plan::plan_yaml(&yaml, &inputs).unwrap());
    let info = RunInfo {
        run_id: "run-1".to_owned(),
        tenant: "acme".to_owned(),
    };
    let secrets = Secrets::new();
    let mut run = Run::new(plan, info, T0);
    let started = Instant::now();
    let mut queue: VecDeque<Event> = VecDeque::from([Event::Started]);
    let mut events = 0usize;
    while let Some(event) = queue.pop_front() {
        events += 1;
        for cmd in run.apply(T0, &event, &secrets) {
            if let Command::StartAttempt {
                step_id,
                attempt,
                with,
                ..
            } = cmd
            {
                let outputs = match with {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                queue.push_back(Event::AttemptFinished {
                    step_id,
                    attempt,
                    outcome: AttemptOutcome::Succeeded { outputs },
                });
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "items={items} maxParallel={max_parallel} events={events} status={} after={} elapsed={:.3}s",
        run.status().as_str(),
        run.step_outputs("after").cloned().unwrap_or(Value::Null),
        elapsed.as_secs_f64()
    );
}
