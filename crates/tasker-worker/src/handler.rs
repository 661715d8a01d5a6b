//! What a handler is: the [`StepHandler`] trait, the [`StepContext`] it receives and the
//! [`StepFailure`] it returns when a step cannot be done.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tasker_protocol::{JsonObject, StepRef, StepRequest};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs one kind of step: the business logic behind a `handler_class`.
///
/// The worker calls [`process`](StepHandler::process) once per step attempt and polls the
/// returned future **on its own event loop**, the same loop that sends heartbeats. A handler that
/// blocks the thread (CPU-bound work, blocking I/O, `std::thread::sleep`) therefore stops the
/// heartbeats too, and the orchestrator declares the worker dead and re-dispatches its steps. Do
/// such work in [`tokio::task::spawn_blocking`] (or on a thread of your own) and await it.
///
/// The future is dropped, without warning, when the step is cancelled (`cancel_steps`), runs past
/// its `timeout_ms`, or is still running when a shutdown's grace period ends. Work the handler
/// started elsewhere (a blocking task, a spawned task) should watch
/// [`StepContext::cancellation`] and stop when it fires.
///
/// Handlers must be idempotent: a step can run more than once (after a lost worker, a timeout or
/// a retry). [`StepContext::idempotency_key`] is stable for one attempt and differs between
/// attempts.
///
/// A handler that panics does not take the worker down: the panic is caught and reported as a
/// **permanent** failure (`error_class` `"panic"`, not retryable). A panic is a bug in the
/// handler; retrying it would burn the step's retries on the same bug and delay the point where
/// an operator sees it. Return [`StepFailure::retryable`] for failures that a retry may fix.
#[async_trait]
pub trait StepHandler: Send + Sync + 'static {
    /// Runs the step. `Ok(output)` completes it (any JSON value, including `null`, becomes the
    /// step's result and is passed to its descendants in `previous_results`); `Err` fails this
    /// attempt.
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure>;
}

/// A handler made from an async closure; see
/// [`HandlerRegistry::register_fn`](crate::HandlerRegistry::register_fn).
pub struct FnHandler<F> {
    function: F,
}

impl<F> FnHandler<F> {
    /// Wraps `function`.
    pub const fn new(function: F) -> Self {
        Self { function }
    }
}

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> StepHandler for FnHandler<F>
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
{
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        (self.function)(step).await
    }
}

/// Everything a handler gets to run one step attempt: the step request from the orchestrator's
/// `step_batch`, plus the worker's identity and a cancellation signal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepContext {
    /// The batch (dispatch) this attempt belongs to.
    pub batch_id: Uuid,
    /// The step.
    pub step_id: i64,
    /// The step's task.
    pub task_id: i64,
    /// The step's name in its task template.
    pub step_name: String,
    /// The handler class the step names (the key this handler was registered under).
    pub handler_class: String,
    /// The step's `handler_config` from the template (possibly empty).
    pub handler_config: JsonObject,
    /// The task's context, as given when the task was created.
    pub task_context: JsonObject,
    /// The outputs of the step's ancestors, keyed by step name (possibly empty).
    pub previous_results: JsonObject,
    /// Which attempt this is: 1 for the first dispatch, +1 for every re-dispatch.
    pub attempt: u32,
    /// The step's configured retry limit (informational: only the orchestrator decides retries).
    pub retry_limit: u32,
    /// How long the handler may run; `None` for no limit. The worker enforces it: past it the
    /// handler's future is dropped and a retryable `tasker.timeout` failure is reported.
    pub timeout: Option<Duration>,
    /// `"<step_id>:<attempt>"`: stable for this attempt, different for the next. Pass it to
    /// external systems that deduplicate requests.
    pub idempotency_key: String,
    /// The id of the worker running the step.
    pub worker_id: String,
    cancellation: CancellationToken,
}

impl StepContext {
    /// The context for `request`, dispatched in batch `batch_id` to the worker `worker_id`, with
    /// a fresh cancellation signal. The worker builds one per step; tests of handlers can too.
    pub fn new(batch_id: Uuid, request: StepRequest, worker_id: &str) -> Self {
        Self {
            batch_id,
            step_id: request.step_id,
            task_id: request.task_id,
            step_name: request.step_name,
            handler_class: request.handler_class,
            handler_config: request.handler_config,
            task_context: request.task_context,
            previous_results: request.previous_results,
            attempt: request.metadata.attempt,
            retry_limit: request.metadata.retry_limit,
            timeout: request.metadata.timeout_ms.map(Duration::from_millis),
            idempotency_key: request.metadata.idempotency_key,
            worker_id: worker_id.to_owned(),
            cancellation: CancellationToken::new(),
        }
    }

    /// Like [`StepContext::new`], copying `request`.
    pub fn from_request(batch_id: Uuid, request: &StepRequest, worker_id: &str) -> Self {
        Self::new(batch_id, request.clone(), worker_id)
    }

    /// The same context with `token` as its cancellation signal.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancellation = token;
        self
    }

    /// The step of the batch this attempt is.
    pub const fn step_ref(&self) -> StepRef {
        StepRef {
            batch_id: self.batch_id,
            step_id: self.step_id,
        }
    }

    /// Fires when the worker gives up on this attempt (cancelled by the orchestrator, timed out,
    /// or cut off by a shutdown). The handler's own future is dropped at that moment; the token
    /// is for work the handler started elsewhere.
    pub const fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }

    /// Completes when [`cancellation`](Self::cancellation) fires.
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }

    /// Whether [`cancellation`](Self::cancellation) has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }
}

/// Why a step attempt failed, as returned by a handler.
///
/// Whether the orchestrator tries again depends on [`retryable`](Self::retryable) and on the
/// step's retry limit; [`retry_after`](Self::retry_after) replaces the backoff policy's delay for
/// the next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    message: String,
    error_class: Option<String>,
    retryable: bool,
    retry_after: Option<Duration>,
    backtrace: Vec<String>,
}

/// The `error_class` reported when a handler's failure does not name one.
pub const DEFAULT_ERROR_CLASS: &str = "StepFailure";

/// The `error_class` reported for a handler that panicked.
pub const PANIC_ERROR_CLASS: &str = "panic";

impl StepFailure {
    fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            message: message.into(),
            error_class: None,
            retryable,
            retry_after: None,
            backtrace: Vec::new(),
        }
    }

    /// A failure that another attempt may fix (a timeout of a remote service, a conflict). The
    /// orchestrator retries it after the step's backoff, within its retry limit.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(message, true)
    }

    /// A retryable failure whose next attempt should wait `delay` (a rate limit's `Retry-After`),
    /// instead of the backoff policy's delay.
    pub fn retryable_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            retry_after: Some(delay),
            ..Self::new(message, true)
        }
    }

    /// A failure no retry can fix (invalid input, a declined payment). The step fails for good.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(message, false)
    }

    /// Names the error's class or kind (`"PaymentDeclined"`, `"reqwest::Error"`), shown to
    /// operators and usable in alerting. Without one, [`DEFAULT_ERROR_CLASS`] is reported.
    /// Classes starting with `tasker.` are reserved for the worker's own failures.
    #[must_use]
    pub fn with_error_class(mut self, error_class: impl Into<String>) -> Self {
        self.error_class = Some(error_class.into());
        self
    }

    /// Attaches stack frames or other context lines, innermost first (cut to the protocol's
    /// limits when sent).
    #[must_use]
    pub fn with_backtrace(mut self, backtrace: Vec<String>) -> Self {
        self.backtrace = backtrace;
        self
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error class reported: the one given, or [`DEFAULT_ERROR_CLASS`].
    pub fn error_class(&self) -> &str {
        self.error_class.as_deref().unwrap_or(DEFAULT_ERROR_CLASS)
    }

    /// Whether another attempt may succeed.
    pub const fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The wished delay before the next attempt, if any.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The attached backtrace lines.
    pub fn backtrace(&self) -> &[String] {
        &self.backtrace
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable {
            "retryable"
        } else {
            "permanent"
        };
        write!(f, "{} ({kind}): {}", self.error_class(), self.message)
    }
}

impl std::error::Error for StepFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_retryability_and_delay() {
        let retry = StepFailure::retryable("busy");
        assert!(retry.is_retryable());
        assert_eq!(retry.retry_after(), None);
        assert_eq!(retry.error_class(), DEFAULT_ERROR_CLASS);

        let later = StepFailure::retryable_after("rate limited", Duration::from_millis(250));
        assert!(later.is_retryable());
        assert_eq!(later.retry_after(), Some(Duration::from_millis(250)));

        let permanent = StepFailure::permanent("declined").with_error_class("PaymentDeclined");
        assert!(!permanent.is_retryable());
        assert_eq!(permanent.error_class(), "PaymentDeclined");
        assert_eq!(
            permanent.to_string(),
            "PaymentDeclined (permanent): declined"
        );
    }
}
