//! `builtin:noop`: succeeds at once; its outputs are `with` (when an object), masked.

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::Masker;
use crate::executor::Executor;
use crate::request::{ExecOutcome, ExecRequest, OutputLine};

/// `builtin:noop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopExecutor;

impl Executor for NoopExecutor {
    fn execute(
        &self,
        request: ExecRequest,
        _output: Sender<OutputLine>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        let outputs = match request.with {
            Value::Object(map) => Masker::new(&request.secrets).mask_map(map),
            _ => Map::new(),
        };
        Box::pin(async move { ExecOutcome::succeeded(outputs) })
    }
}
