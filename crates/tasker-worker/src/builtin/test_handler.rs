//! `tasker.test`: the configurable handler used by tests, examples and benchmarks.
//!
//! Its behaviour comes from the step's `handler_config`, overridden key by key for one task by
//! `task_context.test_behaviour.<step_name>` (an object with the same keys). Keys (all optional;
//! unknown keys are ignored, a known key with the wrong type fails the step permanently with
//! `error_class` `InvalidTestBehaviour`):
//!
//! | key | type | effect |
//! | --- | --- | --- |
//! | `sleep_ms` | integer ≥ 0 | sleep this long first (async; stops at once when the step is cancelled) |
//! | `panic` | boolean | panic after the sleep (the worker reports a permanent `panic` failure) |
//! | `fail_permanently` | boolean | fail permanently (not retryable) |
//! | `fail_retryable_attempts` | integer K ≥ 0 | fail retryably while `attempt <= K`; attempts are numbered from 1 (the protocol's `metadata.attempt`), so K = 2 fails attempts 1 and 2 and succeeds on 3 |
//! | `retry_after_ms` | integer ≥ 0 | with `fail_retryable_attempts`: the retry delay asked for |
//! | `error_class` | string | the `error_class` of the failures above (default `TestPermanentFailure` / `TestRetryableFailure`) |
//! | `output` | any JSON | the step's output, returned as-is (also `null`) |
//!
//! They apply in this order: sleep, panic, permanent failure, retryable failure, output. Without
//! `output` the step returns
//! `{"step": <step_name>, "attempt": <n>, "previous_results": [<sorted keys>], "worker": <worker_id>}`,
//! so tests can check which parents' results reached each step.
//!
//! Every execution (before any of the above) appends one line
//! `<task_id> <step_name> <step_id> <attempt> <worker_id>\n` to the execution log, if one is
//! configured: by default the file named by the environment variable
//! [`EXECUTION_LOG_ENV`] (`TASKER_TEST_EXECUTION_LOG`), opened in append mode and written with one
//! `write` per line, so that several worker processes can share it. Tests count executions with it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::handler::{StepContext, StepFailure, StepHandler};

/// The handler class of the test handler.
pub const TEST_HANDLER_CLASS: &str = "tasker.test";

/// The environment variable naming the execution log file.
pub const EXECUTION_LOG_ENV: &str = "TASKER_TEST_EXECUTION_LOG";

/// The `error_class` of a step whose behaviour keys have the wrong type.
pub const INVALID_BEHAVIOUR_ERROR_CLASS: &str = "InvalidTestBehaviour";

/// The `tasker.test` handler. See the [module documentation](self) for its behaviour keys.
#[derive(Debug, Clone, Default)]
pub struct TestHandler {
    execution_log: Option<PathBuf>,
}

impl TestHandler {
    /// A test handler that logs no executions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A test handler that logs executions to the file named by [`EXECUTION_LOG_ENV`], if that
    /// variable is set (read once, now).
    pub fn from_env() -> Self {
        Self {
            execution_log: std::env::var_os(EXECUTION_LOG_ENV)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
        }
    }

    /// A test handler that logs executions to `path`.
    pub fn with_execution_log(path: impl Into<PathBuf>) -> Self {
        Self {
            execution_log: Some(path.into()),
        }
    }

    /// The execution log file, if any.
    pub fn execution_log(&self) -> Option<&Path> {
        self.execution_log.as_deref()
    }

    fn record_execution(&self, step: &StepContext) -> Result<(), StepFailure> {
        let Some(path) = &self.execution_log else {
            return Ok(());
        };
        let line = format!(
            "{} {} {} {} {}\n",
            step.task_id, step.step_name, step.step_id, step.attempt, step.worker_id
        );
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|error| {
                StepFailure::permanent(format!(
                    "tasker.test cannot append to the execution log {}: {error}",
                    path.display()
                ))
                .with_error_class("TestExecutionLogError")
            })
    }
}

/// The behaviour of one `tasker.test` execution, read from the step.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TestBehaviour {
    /// `sleep_ms`.
    pub sleep: Option<Duration>,
    /// `panic`.
    pub panic: bool,
    /// `fail_permanently`.
    pub fail_permanently: bool,
    /// `fail_retryable_attempts`.
    pub fail_retryable_attempts: u64,
    /// `retry_after_ms`.
    pub retry_after: Option<Duration>,
    /// `error_class`.
    pub error_class: Option<String>,
    /// `output`, when present (a present `null` is `Some(Value::Null)`).
    pub output: Option<Value>,
}

impl TestBehaviour {
    /// The behaviour for `step`: its `handler_config`, overridden by
    /// `task_context.test_behaviour.<step_name>`.
    ///
    /// # Errors
    ///
    /// A permanent [`StepFailure`] naming the first key with the wrong type.
    pub fn for_step(step: &StepContext) -> Result<Self, StepFailure> {
        let mut keys: Map<String, Value> = step.handler_config.clone();
        match step
            .task_context
            .get("test_behaviour")
            .and_then(|all| all.get(&step.step_name))
        {
            Some(Value::Object(overrides)) => {
                keys.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "task_context.test_behaviour.{} must be an object, not {other}",
                    step.step_name
                )));
            }
            None => {}
        }
        Self::from_keys(&keys)
    }

    /// The behaviour described by `keys` (see the [module documentation](self)).
    ///
    /// # Errors
    ///
    /// A permanent [`StepFailure`] naming the first key with the wrong type.
    pub fn from_keys(keys: &Map<String, Value>) -> Result<Self, StepFailure> {
        Ok(Self {
            sleep: read_u64(keys, "sleep_ms")?.map(Duration::from_millis),
            panic: read_bool(keys, "panic")?.unwrap_or(false),
            fail_permanently: read_bool(keys, "fail_permanently")?.unwrap_or(false),
            fail_retryable_attempts: read_u64(keys, "fail_retryable_attempts")?.unwrap_or(0),
            retry_after: read_u64(keys, "retry_after_ms")?.map(Duration::from_millis),
            error_class: match keys.get("error_class") {
                None | Some(Value::Null) => None,
                Some(Value::String(class)) if !class.is_empty() => Some(class.clone()),
                Some(other) => {
                    return Err(invalid(format!(
                        "error_class must be a non-empty string, not {other}"
                    )));
                }
            },
            output: keys.get("output").cloned(),
        })
    }
}

fn invalid(message: String) -> StepFailure {
    StepFailure::permanent(format!("tasker.test: {message}"))
        .with_error_class(INVALID_BEHAVIOUR_ERROR_CLASS)
}

fn read_u64(keys: &Map<String, Value>, key: &str) -> Result<Option<u64>, StepFailure> {
    match keys.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be an integer >= 0, not {value}"))),
    }
}

fn read_bool(keys: &Map<String, Value>, key: &str) -> Result<Option<bool>, StepFailure> {
    match keys.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(value) => Err(invalid(format!("{key} must be true or false, not {value}"))),
    }
}

#[async_trait]
impl StepHandler for TestHandler {
    async fn process(&self, step: StepContext) -> Result<Value, StepFailure> {
        self.record_execution(&step)?;
        let behaviour = TestBehaviour::for_step(&step)?;
        if let Some(sleep) = behaviour.sleep {
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = step.cancelled() => {
                    return Err(StepFailure::retryable("tasker.test: cancelled while sleeping"));
                }
            }
        }
        if behaviour.panic {
            panic!(
                "tasker.test: step {} asked to panic (attempt {})",
                step.step_name, step.attempt
            );
        }
        if behaviour.fail_permanently {
            return Err(StepFailure::permanent(format!(
                "tasker.test: step {} is configured to fail permanently",
                step.step_name
            ))
            .with_error_class(
                behaviour
                    .error_class
                    .unwrap_or_else(|| "TestPermanentFailure".to_owned()),
            ));
        }
        if u64::from(step.attempt) <= behaviour.fail_retryable_attempts {
            let message = format!(
                "tasker.test: step {} fails attempt {} of the first {} (retryable)",
                step.step_name, step.attempt, behaviour.fail_retryable_attempts
            );
            let failure = match behaviour.retry_after {
                Some(delay) => StepFailure::retryable_after(message, delay),
                None => StepFailure::retryable(message),
            };
            return Err(failure.with_error_class(
                behaviour
                    .error_class
                    .unwrap_or_else(|| "TestRetryableFailure".to_owned()),
            ));
        }
        if let Some(output) = behaviour.output {
            return Ok(output);
        }
        let mut parents: Vec<&String> = step.previous_results.keys().collect();
        parents.sort();
        Ok(json!({
            "step": step.step_name,
            "attempt": step.attempt,
            "previous_results": parents,
            "worker": step.worker_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_protocol::{StepMetadata, StepRequest};
    use uuid::Uuid;

    fn step(config: Value, context: Value, attempt: u32) -> StepContext {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let request = StepRequest {
            step_id: 11,
            task_id: 5,
            step_name: "charge".to_owned(),
            handler_class: TEST_HANDLER_CLASS.to_owned(),
            handler_config: object(config),
            task_context: object(context),
            previous_results: object(json!({ "validate": 1, "reserve": {"ok": true} })),
            metadata: StepMetadata {
                attempt,
                retry_limit: 3,
                timeout_ms: None,
                idempotency_key: StepMetadata::idempotency_key_for(11, attempt),
            },
        };
        StepContext::from_request(Uuid::nil(), &request, "worker-a")
    }

    async fn run(config: Value, context: Value, attempt: u32) -> Result<Value, StepFailure> {
        TestHandler::new()
            .process(step(config, context, attempt))
            .await
    }

    #[tokio::test]
    async fn default_output_names_step_attempt_parents_and_worker() {
        let output = run(json!({}), json!({}), 2).await.expect("succeeds");
        assert_eq!(
            output,
            json!({
                "step": "charge",
                "attempt": 2,
                "previous_results": ["reserve", "validate"],
                "worker": "worker-a",
            })
        );
    }

    #[tokio::test]
    async fn output_is_returned_as_is() {
        let output = run(json!({ "output": {"total": 42} }), json!({}), 1).await;
        assert_eq!(output, Ok(json!({"total": 42})));
        let null = run(json!({ "output": null }), json!({}), 1).await;
        assert_eq!(null, Ok(Value::Null));
    }

    #[tokio::test]
    async fn fails_retryably_for_the_first_k_attempts_then_succeeds() {
        let config = json!({ "fail_retryable_attempts": 2, "retry_after_ms": 1500 });
        for attempt in 1..=2 {
            let failure = run(config.clone(), json!({}), attempt)
                .await
                .expect_err("configured to fail");
            assert!(failure.is_retryable());
            assert_eq!(failure.retry_after(), Some(Duration::from_millis(1500)));
            assert_eq!(failure.error_class(), "TestRetryableFailure");
            assert!(failure.message().contains(&format!("attempt {attempt}")));
        }
        let output = run(config, json!({}), 3).await.expect("attempt 3 succeeds");
        assert_eq!(output["attempt"], json!(3));
    }

    #[tokio::test]
    async fn retryable_failure_without_retry_after_has_none() {
        let failure = run(json!({ "fail_retryable_attempts": 1 }), json!({}), 1)
            .await
            .expect_err("fails");
        assert_eq!(failure.retry_after(), None);
    }

    #[tokio::test]
    async fn fails_permanently_with_the_configured_class() {
        let failure = run(
            json!({ "fail_permanently": true, "error_class": "CardDeclined" }),
            json!({}),
            1,
        )
        .await
        .expect_err("fails");
        assert!(!failure.is_retryable());
        assert_eq!(failure.error_class(), "CardDeclined");
    }

    #[tokio::test]
    async fn task_context_overrides_the_handler_config_per_step() {
        let config = json!({ "fail_permanently": true, "output": "config" });
        let context = json!({ "test_behaviour": {
            "charge": { "fail_permanently": false },
            "other_step": { "output": "not mine" },
        }});
        assert_eq!(run(config, context, 1).await, Ok(json!("config")));
    }

    #[tokio::test]
    async fn wrong_types_fail_permanently_naming_the_key() {
        let failure = run(json!({ "sleep_ms": "ten" }), json!({}), 1)
            .await
            .expect_err("invalid");
        assert!(!failure.is_retryable());
        assert_eq!(failure.error_class(), INVALID_BEHAVIOUR_ERROR_CLASS);
        assert!(failure.message().contains("sleep_ms"), "{failure}");

        let failure = run(json!({}), json!({ "test_behaviour": { "charge": 3 } }), 1)
            .await
            .expect_err("invalid");
        assert!(
            failure.message().contains("test_behaviour.charge"),
            "{failure}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_and_stops_sleeping_when_cancelled() {
        let started = tokio::time::Instant::now();
        let output = run(json!({ "sleep_ms": 250 }), json!({}), 1).await;
        assert!(output.is_ok());
        assert_eq!(started.elapsed(), Duration::from_millis(250));

        let context = step(json!({ "sleep_ms": 3_600_000 }), json!({}), 1);
        context.cancellation().cancel();
        let started = tokio::time::Instant::now();
        let failure = TestHandler::new()
            .process(context)
            .await
            .expect_err("cancelled");
        assert!(failure.message().contains("cancelled"));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn records_every_execution_as_one_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("executions.log");
        let handler = TestHandler::with_execution_log(&log);
        handler
            .process(step(json!({}), json!({}), 1))
            .await
            .expect("succeeds");
        handler
            .process(step(json!({ "fail_permanently": true }), json!({}), 2))
            .await
            .expect_err("fails");
        let text = std::fs::read_to_string(&log).expect("log written");
        assert_eq!(text, "5 charge 11 1 worker-a\n5 charge 11 2 worker-a\n");
    }
}
