//! Running one step attempt: the handler's future, guarded against panics, bounded by the step's
//! timeout and stoppable by the worker. The worker polls the returned future on its own loop.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;
use tasker_protocol::StepRef;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handler::{StepContext, StepFailure, StepHandler};

/// How a step attempt's future ended.
#[derive(Debug)]
pub(crate) enum StepEnd {
    /// The handler returned.
    Returned(Result<Value, StepFailure>),
    /// The handler panicked; the panic's message.
    Panicked(String),
    /// The step's `timeout_ms` passed first; the handler's future was dropped.
    TimedOut(Duration),
    /// The worker fired the step's cancellation token (cancel or shutdown); the handler's future
    /// was dropped. The worker knows why.
    Interrupted,
}

/// A step attempt that ended, and how long it ran.
#[derive(Debug)]
pub(crate) struct FinishedStep {
    pub(crate) step: StepRef,
    pub(crate) end: StepEnd,
    pub(crate) elapsed: Duration,
}

/// The future of one step attempt, as the worker's loop holds it.
pub(crate) type StepFuture = Pin<Box<dyn Future<Output = FinishedStep> + Send>>;

/// Runs `handler` on `context`. The context's cancellation token stops the attempt when fired
/// (the handler's future is dropped) and is fired when the timeout stops it, so work the handler
/// started elsewhere can stop too.
pub(crate) fn execute(handler: Arc<dyn StepHandler>, context: StepContext) -> StepFuture {
    Box::pin(async move {
        let started = Instant::now();
        let step = context.step_ref();
        let timeout = context.timeout;
        let token: CancellationToken = context.cancellation().clone();
        let end = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.process(context))) {
            Err(payload) => StepEnd::Panicked(panic_message(payload.as_ref())),
            Ok(work) => {
                let deadline = async {
                    match timeout {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = token.cancelled() => StepEnd::Interrupted,
                    () = deadline => StepEnd::TimedOut(timeout.unwrap_or_default()),
                    result = AssertUnwindSafe(work).catch_unwind() => match result {
                        Ok(returned) => StepEnd::Returned(returned),
                        Err(payload) => StepEnd::Panicked(panic_message(payload.as_ref())),
                    },
                }
            }
        };
        if matches!(end, StepEnd::TimedOut(_)) {
            token.cancel();
        }
        FinishedStep {
            step,
            end,
            elapsed: started.elapsed(),
        }
    })
}

/// The text of a panic's payload (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::FnHandler;
    use serde_json::json;
    use tasker_protocol::{StepMetadata, StepRequest};
    use uuid::Uuid;

    fn context(timeout_ms: Option<u64>) -> StepContext {
        let request = StepRequest {
            step_id: 7,
            task_id: 3,
            step_name: "s".to_owned(),
            handler_class: "h".to_owned(),
            handler_config: serde_json::Map::new(),
            task_context: serde_json::Map::new(),
            previous_results: serde_json::Map::new(),
            metadata: StepMetadata {
                attempt: 1,
                retry_limit: 3,
                timeout_ms,
                idempotency_key: StepMetadata::idempotency_key_for(7, 1),
            },
        };
        StepContext::from_request(Uuid::nil(), &request, "w")
    }

    #[tokio::test]
    async fn returns_the_handlers_result() {
        let handler = Arc::new(FnHandler::new(|step: StepContext| async move {
            Ok(json!({ "step": step.step_id }))
        }));
        let finished = execute(handler, context(None)).await;
        assert_eq!(finished.step.step_id, 7);
        match finished.end {
            StepEnd::Returned(Ok(value)) => assert_eq!(value, json!({ "step": 7 })),
            other => panic!("unexpected end {other:?}"),
        }
    }

    #[tokio::test]
    async fn catches_panics_in_the_future() {
        let handler = Arc::new(FnHandler::new(|_step: StepContext| async move {
            if true {
                panic!("boom {}", 42);
            }
            Ok(Value::Null)
        }));
        let finished = execute(handler, context(None)).await;
        match finished.end {
            StepEnd::Panicked(message) => assert_eq!(message, "boom 42"),
            other => panic!("unexpected end {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_timeout_and_fires_the_token() {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let handler = Arc::new(FnHandler::new(move |step: StepContext| {
            let token = step.cancellation().clone();
            if let Some(sender) = seen_tx.lock().expect("not poisoned").take() {
                let _ = sender.send(token);
            }
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            }
        }));
        let finished = execute(handler, context(Some(50))).await;
        match finished.end {
            StepEnd::TimedOut(limit) => assert_eq!(limit, Duration::from_millis(50)),
            other => panic!("unexpected end {other:?}"),
        }
        assert_eq!(finished.elapsed, Duration::from_millis(50));
        assert!(seen_rx.await.expect("handler ran").is_cancelled());
    }

    #[tokio::test]
    async fn stops_when_the_token_fires() {
        let step = context(None);
        let token = step.cancellation().clone();
        let handler = Arc::new(FnHandler::new(|_step: StepContext| async move {
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }));
        let future = execute(handler, step);
        token.cancel();
        assert!(matches!(future.await.end, StepEnd::Interrupted));
    }
}
