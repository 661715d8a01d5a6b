//! The template file format exactly as written: the serde shape, before validation.
//!
//! Every struct denies unknown keys, so a typo (`retry_limt`) is an error rather than a silently
//! ignored setting. Keys that may be written with an empty value (`depends_on:`,
//! `handler_config:`) treat an explicit null as their default.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::backoff::BackoffPolicy;

/// Default for [`StepDocument::retryable`].
pub(crate) const DEFAULT_RETRYABLE: bool = true;
/// Default for [`StepDocument::retry_limit`].
pub(crate) const DEFAULT_RETRY_LIMIT: u32 = 3;
/// Default for [`StepDocument::timeout_ms`].
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A whole template file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a task template: a mapping with name, namespace, version and steps"
)]
pub(crate) struct TemplateDocument {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) context_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backoff: Option<BackoffPolicy>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) steps: Vec<StepDocument>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub(crate) environments: BTreeMap<String, EnvironmentOverrides>,
}

/// One entry of `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a step: a mapping with name and handler_class"
)]
pub(crate) struct StepDocument {
    pub(crate) name: String,
    pub(crate) handler_class: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) depends_on: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) handler_config: Map<String, Value>,
    #[serde(default = "default_retryable")]
    pub(crate) retryable: bool,
    #[serde(default = "default_retry_limit")]
    pub(crate) retry_limit: u32,
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backoff: Option<BackoffPolicy>,
}

/// The overrides one environment applies: `environments.<name>`.
///
/// Only step settings can be overridden; the set of steps, their handlers and their
/// dependencies are the same in every environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentOverrides {
    /// Overrides by step name. Naming a step the template does not have is an error.
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: BTreeMap<String, StepOverride>,
}

/// Settings one environment changes for one step: `environments.<env>.steps.<step>`.
/// Every key is optional; an absent key keeps the step's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepOverride {
    /// Merged into the step's `handler_config`: mappings are merged key by key, recursively;
    /// any other value (scalar, list, null) replaces the step's value at that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_config: Option<Map<String, Value>>,
    /// Replaces the step's `retryable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Replaces the step's `retry_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_limit: Option<u32>,
    /// Replaces the step's `timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Replaces the step's whole backoff policy (keys left out take the
    /// [`BackoffPolicy`] defaults, not the step's values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffPolicy>,
}

fn default_retryable() -> bool {
    DEFAULT_RETRYABLE
}

fn default_retry_limit() -> u32 {
    DEFAULT_RETRY_LIMIT
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Deserializes `T`, reading an explicit null as `T::default()`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
