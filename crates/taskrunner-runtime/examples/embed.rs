//! Embedding the runtime in another service: build it from a store, the built-in executors
//! plus one of the host's own, a clock and a secret provider; create a run; follow its log;
//! approve its gate; read the final state.
//!
//! Everything comes from `taskrunner_runtime` (plus `tokio`): one dependency to embed.
//!
//! Run with `cargo run -p taskrunner-runtime --example embed`.

use std::sync::Arc;

use taskrunner_runtime::exec::{
    BoxFuture, ExecOutcome, ExecRequest, Executor, ExecutorRegistry, OutputLine, OutputStream,
};
use taskrunner_runtime::serde_json::{Map, Value, json};
use taskrunner_runtime::store::{MemoryStore, Store};
use taskrunner_runtime::{
    CancellationToken, CreateRun, Decision, DecisionRequest, RunStatus, Runtime, RuntimeConfig,
    StaticSecrets, SystemClock,
};
use tokio::sync::mpsc::Sender;

/// The host's own executor: `uses: builtin:inventory` looks hosts up in the service's memory.
#[derive(Debug)]
struct Inventory;

impl Executor for Inventory {
    fn execute(
        &self,
        request: ExecRequest,
        output: Sender<OutputLine>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        Box::pin(async move {
            let env = request
                .with
                .get("env")
                .and_then(Value::as_str)
                .unwrap_or("dev")
                .to_owned();
            let _ = output
                .send(OutputLine::new(
                    OutputStream::Stdout,
                    format!("listing hosts in {env}"),
                ))
                .await;
            let mut outputs = Map::new();
            outputs.insert(
                "hosts".into(),
                json!([format!("{env}-1"), format!("{env}-2")]),
            );
            ExecOutcome::Succeeded { outputs }
        })
    }
}

const PACK: &str = r#"
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: rollout, version: 1.0.0}
spec:
  inputs: [{name: env, type: string, default: staging}]
  approvals: [{id: go}]
  steps:
    - id: hosts
      run: {uses: builtin:inventory, with: {env: "{{ inputs.env }}"}}
    - id: confirm
      gate: {approval: {id: go, message: "roll out to {{ length(steps.hosts.outputs.hosts) }} hosts?"}}
    - id: each
      map:
        items: steps.hosts.outputs.hosts
        maxParallel: 2
        step: {id: deploy, run: {uses: builtin:echo, with: {message: "deploying {{ item }}"}}}
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workspaces = std::env::temp_dir().join(format!("taskrunner-embed-{}", std::process::id()));
    let mut executors = ExecutorRegistry::with_builtins();
    executors.register("builtin:inventory", Arc::new(Inventory));
    let runtime = Runtime::start(
        Store::new(MemoryStore::new()),
        executors,
        Arc::new(SystemClock),
        Arc::new(StaticSecrets::new()),
        RuntimeConfig::new(&workspaces),
    )
    .await?;

    let view = runtime
        .create_run(CreateRun {
            tenant: "acme".into(),
            run_id: Some("rollout-1".into()),
            manifest: PACK.into(),
            inputs: Map::new(),
        })
        .await?;
    let parked = runtime.wait_settled("acme", "rollout-1").await?;
    println!("run is {:?}", parked.status);
    assert_eq!(parked.status, RunStatus::AwaitingApproval);

    let decision = DecisionRequest {
        caller_scopes: None,
        decision: Decision::Approved,
        plan_hash: view.plan_hash,
        actor: "ops@example.com".into(),
        summary: None,
    };
    let outcome = runtime.decide("acme", "rollout-1", "go", decision).await?;
    println!("approved, resumed: {}", outcome.resumed);

    let done = runtime.wait_settled("acme", "rollout-1").await?;
    for entry in runtime.logs("acme", "rollout-1", 0, 1000).await? {
        println!("{}", taskrunner_runtime::log_entry_json(&entry));
    }
    println!("run is {:?}", done.status);
    let _ = std::fs::remove_dir_all(workspaces);
    Ok(())
}
