//! `builtin:echo`: writes `with.message` as stdout line(s) and returns it as `message`.

use futures::future::BoxFuture;
use serde_json::Map;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::Masker;
use crate::executor::Executor;
use crate::lines::LineSplitter;
use crate::request::{ExecOutcome, ExecRequest, OutputLine, OutputStream, reason};

/// `builtin:echo`. The message is rendered as text (strings as they are, other values as
/// compact JSON); a multi-line message becomes several lines; the line and the `message`
/// output are masked.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoExecutor;

impl Executor for EchoExecutor {
    fn execute(
        &self,
        request: ExecRequest,
        output: Sender<OutputLine>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, ExecOutcome> {
        Box::pin(async move {
            let Some(message) = request.with.get("message") else {
                return ExecOutcome::failed(
                    reason::INVALID_PARAMETERS,
                    "builtin:echo requires `with.message`",
                );
            };
            let masker = Masker::new(&request.secrets);
            let text = taskrunner_expr::render_text(message);
            let mut splitter = LineSplitter::new(OutputStream::Stdout, masker.clone());
            let mut lines = splitter.push(text.as_bytes());
            lines.extend(splitter.finish());
            if lines.is_empty() {
                lines.push(OutputLine::new(OutputStream::Stdout, ""));
            }
            for line in lines {
                if output.send(line).await.is_err() {
                    break;
                }
            }
            let mut outputs = Map::new();
            outputs.insert("message".to_owned(), masker.mask_value(message));
            ExecOutcome::succeeded(outputs)
        })
    }
}
