//! Task templates: the YAML description of a workflow, parsed and validated.
//!
//! A template names a workflow (`namespace`, `name`, semantic `version`), optionally describes
//! its task context with a JSON Schema (`context_schema`), and lists its `steps`: each with the
//! `handler_class` a worker runs, the steps it `depends_on`, its `handler_config`, and its retry
//! settings. `environments` holds per-environment overrides of step settings.
//!
//! ```yaml
//! name: order_fulfillment
//! namespace: order_fulfillment
//! version: 1.0.0
//! description: Validate, reserve, charge, ship.   # optional
//! context_schema: { type: object }                # optional JSON Schema
//! backoff: { base_delay_ms: 500 }                 # optional default for every step
//! steps:
//!   - name: validate_order
//!     handler_class: OrderFulfillment::ValidateOrderHandler
//!     retryable: false       # default true
//!     retry_limit: 1         # default 3; attempts allowed, the first included
//!   - name: ship_order
//!     handler_class: OrderFulfillment::ShipOrderHandler
//!     depends_on: [validate_order]                # default []
//!     handler_config: { carrier: ups }            # default {}
//!     timeout_ms: 60000                           # default 30000
//!     backoff: { base_delay_ms: 1000, max_delay_ms: 60000, multiplier: 2.0, jitter: 0.1 }
//! environments:
//!   production:
//!     steps:
//!       ship_order: { handler_config: { carrier: fedex }, retry_limit: 5 }
//! ```
//!
//! [`TaskTemplate::from_yaml_str`] is the only way to get a [`TaskTemplate`] (besides
//! deserializing one, which runs the same checks), so every `TaskTemplate` is valid: its names,
//! version, settings, dependency graph, context schema and every environment's overrides have all
//! been checked. Reading the file is the caller's job (this crate does no I/O).
//!
//! Shared settings can be written once with YAML anchors and merge keys: define the anchor on a
//! step, or under a top-level key starting with `x-` (ignored otherwise), and merge it with
//! `<<: *name`. Problems in such a document are reported without line and column (the merge is
//! expanded before the shape is read), but still with the step and key.
//!
//! Rejections are [`TemplateError`]s whose messages name the culprit. Checks run in a fixed order
//! and the first problem found is reported: YAML syntax, then the shape (missing, unknown,
//! duplicate or mistyped keys, with line and column), then names and version, the template's
//! backoff, the steps (empty list, names, handler classes, duplicates, settings, dependencies),
//! cycles, the context schema, and finally the environments.

mod document;
mod error;
mod version;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::backoff::BackoffPolicy;
use crate::context::ContextValidator;
use crate::dag::{DagError, StepDag};
use document::{StepDocument, TemplateDocument};

pub use document::{EnvironmentOverrides, StepOverride};
use error::YamlPass;
pub use error::{Position, TemplateError};
pub use version::TemplateVersion;

/// Longest allowed name (template, namespace, step, environment), in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest allowed `handler_class`, in characters.
pub const MAX_HANDLER_CLASS_CHARS: usize = 256;

/// A validated task template. See the [module docs](self) for the format.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTemplate {
    name: String,
    namespace: String,
    version: TemplateVersion,
    description: Option<String>,
    context_schema: Option<Value>,
    backoff: Option<BackoffPolicy>,
    steps: Vec<StepTemplate>,
    environments: BTreeMap<String, EnvironmentOverrides>,
    step_indices: BTreeMap<String, usize>,
    dag: StepDag,
}

/// One step of a [`TaskTemplate`], with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTemplate {
    /// Unique within the template; the key of this step's result in its descendants'
    /// `previous_results`.
    pub name: String,
    /// What a worker runs, e.g. `OrderFulfillment::ShipOrderHandler`.
    pub handler_class: String,
    /// Names of the steps this one waits for, as written.
    pub depends_on: Vec<String>,
    /// Passed to the handler with every attempt. Default `{}`.
    pub handler_config: Map<String, Value>,
    /// Whether a failed attempt may be retried. The first attempt always runs. Default `true`.
    pub retryable: bool,
    /// Attempts allowed, the first included: a failed step is retried while
    /// `attempts < retry_limit`. At least 1. Default 3.
    pub retry_limit: u32,
    /// How long one attempt may run before it counts as failed, in milliseconds. At least 1.
    /// Default 30000.
    pub timeout_ms: u64,
    /// The step's own `backoff`, else the template's `backoff`, else `None` (the engine's
    /// default applies).
    pub backoff: Option<BackoffPolicy>,
}

impl TaskTemplate {
    /// Parses and validates a template from YAML text.
    ///
    /// JSON is YAML too, so the JSON form ([`TaskTemplate`]'s `Serialize` output) loads as well.
    ///
    /// # Errors
    ///
    /// A [`TemplateError`] naming the first problem found (see the module docs for the order).
    pub fn from_yaml_str(yaml: &str) -> Result<Self, TemplateError> {
        let value: serde_norway::Value = serde_norway::from_str(yaml)
            .map_err(|error| TemplateError::from_yaml(&error, None, YamlPass::Parse))?;
        if value.is_null() {
            return Err(TemplateError::Yaml {
                position: Position { line: 1, column: 1 },
                message: "the document is empty; a template is a mapping with name, namespace, \
                          version and steps"
                    .to_owned(),
            });
        }
        let document: TemplateDocument = match normalize(&value)? {
            None => serde_norway::from_str(yaml)
                .map_err(|error| TemplateError::from_yaml(&error, Some(&value), YamlPass::Shape))?,
            Some(normalized) => {
                // Re-read the expanded document as text, so errors still carry their YAML path.
                let text = serde_norway::to_string(&normalized).map_err(|error| {
                    TemplateError::from_yaml(&error, None, YamlPass::ShapeOfNormalized)
                })?;
                serde_norway::from_str(&text).map_err(|error| {
                    TemplateError::from_yaml(&error, Some(&normalized), YamlPass::ShapeOfNormalized)
                })?
            }
        };
        Self::from_document(document)
    }

    /// The template's name, unique within its namespace (together with the version).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace the template belongs to.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The template's version.
    #[must_use]
    pub fn version(&self) -> &TemplateVersion {
        &self.version
    }

    /// The human description, if any.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The JSON Schema a task context must satisfy, if any. It is known to compile; build a
    /// [`ContextValidator`] from it with [`ContextValidator::for_template`].
    #[must_use]
    pub fn context_schema(&self) -> Option<&Value> {
        self.context_schema.as_ref()
    }

    /// The template-level `backoff`, the default for steps without their own (already applied
    /// to [`StepTemplate::backoff`]).
    #[must_use]
    pub fn backoff(&self) -> Option<&BackoffPolicy> {
        self.backoff.as_ref()
    }

    /// The steps, in file order. A step's index here is its index in [`TaskTemplate::dag`].
    #[must_use]
    pub fn steps(&self) -> &[StepTemplate] {
        &self.steps
    }

    /// The index of the step called `name`.
    #[must_use]
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.step_indices.get(name).copied()
    }

    /// The step called `name`.
    #[must_use]
    pub fn step(&self, name: &str) -> Option<&StepTemplate> {
        self.step_index(name).map(|index| &self.steps[index])
    }

    /// The dependency graph of the steps, by index.
    #[must_use]
    pub fn dag(&self) -> &StepDag {
        &self.dag
    }

    /// The per-environment overrides, by environment name, as written.
    #[must_use]
    pub fn environments(&self) -> &BTreeMap<String, EnvironmentOverrides> {
        &self.environments
    }

    /// The template as it runs in `environment`: each step's settings with that environment's
    /// overrides applied (see [`StepOverride`] for how each key combines). An environment the
    /// template does not mention has no overrides and gets the template unchanged; use
    /// [`TaskTemplate::environments`] to tell the two apart.
    ///
    /// This cannot fail: every environment's result was validated when the template was loaded.
    /// Applying the same environment twice gives the same result as applying it once.
    #[must_use]
    pub fn for_environment(&self, environment: &str) -> TaskTemplate {
        let mut template = self.clone();
        if let Some(overrides) = self.environments.get(environment) {
            for (step_name, step_override) in &overrides.steps {
                if let Some(&index) = self.step_indices.get(step_name) {
                    apply_override(&mut template.steps[index], step_override);
                }
            }
        }
        template
    }

    /// Validates a parsed document and builds the template.
    fn from_document(document: TemplateDocument) -> Result<Self, TemplateError> {
        check_name("template name", &document.name)?;
        check_name("namespace", &document.namespace)?;
        let version = TemplateVersion::parse(&document.version)?;
        if let Some(backoff) = &document.backoff {
            check_backoff("the template", backoff)?;
        }
        if document.steps.is_empty() {
            return Err(TemplateError::EmptySteps);
        }

        let mut step_indices = BTreeMap::new();
        for (index, step) in document.steps.iter().enumerate() {
            check_name("step name", &step.name)?;
            if let Some(first) = step_indices.insert(step.name.clone(), index) {
                return Err(TemplateError::DuplicateStep {
                    name: step.name.clone(),
                    first,
                    second: index,
                });
            }
        }
        let mut parents = Vec::with_capacity(document.steps.len());
        for step in &document.steps {
            let location = format!("step `{}`", step.name);
            check_handler_class(&step.name, &step.handler_class)?;
            check_settings(
                &location,
                step.retry_limit,
                step.timeout_ms,
                step.backoff.as_ref(),
            )?;
            parents.push(step_parents(step, &step_indices)?);
        }
        let dag =
            StepDag::from_parents(parents).map_err(|error| dag_error(error, &document.steps))?;

        if let Some(schema) = &document.context_schema {
            ContextValidator::new(schema)?;
        }

        let steps: Vec<StepTemplate> = document
            .steps
            .into_iter()
            .map(|step| StepTemplate {
                name: step.name,
                handler_class: step.handler_class,
                depends_on: step.depends_on,
                handler_config: step.handler_config,
                retryable: step.retryable,
                retry_limit: step.retry_limit,
                timeout_ms: step.timeout_ms,
                backoff: step.backoff.or(document.backoff),
            })
            .collect();

        for (environment, overrides) in &document.environments {
            check_name("environment name", environment)?;
            for (step_name, step_override) in &overrides.steps {
                let Some(&index) = step_indices.get(step_name) else {
                    return Err(TemplateError::UnknownOverrideStep {
                        environment: environment.clone(),
                        step: step_name.clone(),
                    });
                };
                let mut step = steps[index].clone();
                apply_override(&mut step, step_override);
                check_settings(
                    &format!("step `{step_name}` in environment `{environment}`"),
                    step.retry_limit,
                    step.timeout_ms,
                    step.backoff.as_ref(),
                )?;
            }
        }

        Ok(Self {
            name: document.name,
            namespace: document.namespace,
            version,
            description: document.description,
            context_schema: document.context_schema,
            backoff: document.backoff,
            steps,
            environments: document.environments,
            step_indices,
            dag,
        })
    }

    /// The document this template serializes as: every default written out.
    fn to_document(&self) -> TemplateDocument {
        TemplateDocument {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            version: self.version.to_string(),
            description: self.description.clone(),
            context_schema: self.context_schema.clone(),
            backoff: self.backoff,
            steps: self
                .steps
                .iter()
                .map(|step| StepDocument {
                    name: step.name.clone(),
                    handler_class: step.handler_class.clone(),
                    depends_on: step.depends_on.clone(),
                    handler_config: step.handler_config.clone(),
                    retryable: step.retryable,
                    retry_limit: step.retry_limit,
                    timeout_ms: step.timeout_ms,
                    backoff: step.backoff,
                })
                .collect(),
            environments: self.environments.clone(),
        }
    }
}

/// Serializes in the file format with every default filled in, so the output (as JSON or YAML)
/// loads back into an equal template.
impl Serialize for TaskTemplate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_document().serialize(serializer)
    }
}

/// Deserializes the file format and runs every check [`TaskTemplate::from_yaml_str`] runs; a
/// rejection becomes the deserializer's error with the [`TemplateError`] message.
impl<'de> Deserialize<'de> for TaskTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let document = TemplateDocument::deserialize(deserializer)?;
        Self::from_document(document).map_err(serde::de::Error::custom)
    }
}

/// Expands YAML merge keys (`<<: *anchor`) and drops top-level keys starting with `x-` (places
/// to define anchors). Returns `None` when the document has neither, so it can be read straight
/// from its text with exact positions.
fn normalize(value: &serde_norway::Value) -> Result<Option<serde_norway::Value>, TemplateError> {
    let mut normalized = value.clone();
    if let serde_norway::Value::Mapping(mapping) = &mut normalized {
        mapping.retain(|key, _| !key.as_str().is_some_and(|key| key.starts_with("x-")));
    }
    normalized
        .apply_merge()
        .map_err(|error| TemplateError::from_yaml(&error, None, YamlPass::ShapeOfNormalized))?;
    Ok((normalized != *value).then_some(normalized))
}

/// Applies one environment's override to a step.
fn apply_override(step: &mut StepTemplate, step_override: &StepOverride) {
    if let Some(config) = &step_override.handler_config {
        merge_maps(&mut step.handler_config, config);
    }
    if let Some(retryable) = step_override.retryable {
        step.retryable = retryable;
    }
    if let Some(retry_limit) = step_override.retry_limit {
        step.retry_limit = retry_limit;
    }
    if let Some(timeout_ms) = step_override.timeout_ms {
        step.timeout_ms = timeout_ms;
    }
    if let Some(backoff) = step_override.backoff {
        step.backoff = Some(backoff);
    }
}

/// Merges `overlay` into `base`: where both hold a mapping the two are merged recursively,
/// otherwise the overlay's value replaces the base's.
fn merge_maps(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(base_map)), Value::Object(overlay_map)) => {
                merge_maps(base_map, overlay_map);
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Names (template, namespace, step, environment): 1 to [`MAX_NAME_CHARS`] characters, each a
/// letter, a digit, `_`, `-` or `.`. They appear in URLs, log lines, metrics labels and
/// `previous_results` keys, so nothing that needs quoting is allowed.
fn check_name(what: &str, value: &str) -> Result<(), TemplateError> {
    let reason = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.chars().count() > MAX_NAME_CHARS {
        Some(format!("it is longer than {MAX_NAME_CHARS} characters"))
    } else if value.chars().any(char::is_whitespace) {
        Some(
            "it contains whitespace; names may only contain letters, digits, '_', '-' and '.'"
                .to_owned(),
        )
    } else {
        value
            .chars()
            .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| {
                format!(
                    "it contains {c:?}; names may only contain letters, digits, '_', '-' and '.'"
                )
            })
    };
    match reason {
        Some(reason) => Err(TemplateError::InvalidName {
            what: what.to_owned(),
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Handler classes: 1 to [`MAX_HANDLER_CLASS_CHARS`] characters, no whitespace or control
/// characters (`OrderFulfillment::ShipOrderHandler`, `billing.charge`, `tasker.test` are fine).
fn check_handler_class(step: &str, value: &str) -> Result<(), TemplateError> {
    let reason = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.chars().count() > MAX_HANDLER_CLASS_CHARS {
        Some(format!(
            "it is longer than {MAX_HANDLER_CLASS_CHARS} characters"
        ))
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TemplateError::InvalidHandlerClass {
            step: step.to_owned(),
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a step's retry limit, timeout and backoff.
fn check_settings(
    location: &str,
    retry_limit: u32,
    timeout_ms: u64,
    backoff: Option<&BackoffPolicy>,
) -> Result<(), TemplateError> {
    if retry_limit == 0 {
        return Err(TemplateError::InvalidRetryLimit {
            location: location.to_owned(),
            value: retry_limit,
            reason: "it counts attempts including the first, so it must be at least 1 \
                     (to forbid retries, set `retryable: false`)",
        });
    }
    if timeout_ms == 0 {
        return Err(TemplateError::InvalidTimeout {
            location: location.to_owned(),
            value: timeout_ms,
            reason: "an attempt needs at least 1 millisecond",
        });
    }
    if let Some(backoff) = backoff {
        check_backoff(location, backoff)?;
    }
    Ok(())
}

/// A backoff policy is usable when the multiplier is finite and at least 1, the jitter is a
/// fraction in `0..=1`, and the base delay does not exceed the cap.
fn check_backoff(location: &str, backoff: &BackoffPolicy) -> Result<(), TemplateError> {
    let reason = if !(backoff.multiplier.is_finite() && backoff.multiplier >= 1.0) {
        Some(format!(
            "multiplier is {}, but must be a finite number of at least 1 (delays never shrink)",
            backoff.multiplier
        ))
    } else if !(0.0..=1.0).contains(&backoff.jitter) {
        Some(format!(
            "jitter is {}, but must be a fraction between 0 and 1",
            backoff.jitter
        ))
    } else if backoff.base_delay_ms > backoff.max_delay_ms {
        Some(format!(
            "base_delay_ms ({}) is greater than max_delay_ms ({})",
            backoff.base_delay_ms, backoff.max_delay_ms
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TemplateError::InvalidBackoff {
            location: location.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Resolves a step's `depends_on` names to indices, rejecting itself, unknown names and repeats.
fn step_parents(
    step: &StepDocument,
    step_indices: &BTreeMap<String, usize>,
) -> Result<Vec<usize>, TemplateError> {
    let mut parents = Vec::with_capacity(step.depends_on.len());
    for (position, dependency) in step.depends_on.iter().enumerate() {
        if *dependency == step.name {
            return Err(TemplateError::SelfDependency {
                step: step.name.clone(),
            });
        }
        let Some(&index) = step_indices.get(dependency) else {
            return Err(TemplateError::UnknownDependency {
                step: step.name.clone(),
                dependency: dependency.clone(),
            });
        };
        if step.depends_on[..position].contains(dependency) {
            return Err(TemplateError::DuplicateDependency {
                step: step.name.clone(),
                dependency: dependency.clone(),
            });
        }
        parents.push(index);
    }
    Ok(parents)
}

/// Names the steps in a graph error. Only [`DagError::Cycle`] can reach here, because
/// [`step_parents`] rejects the others first with better messages; they are mapped anyway.
fn dag_error(error: DagError, steps: &[StepDocument]) -> TemplateError {
    let name = |index: usize| {
        steps
            .get(index)
            .map_or_else(|| format!("#{index}"), |step| step.name.clone())
    };
    match error {
        DagError::Cycle { path } => TemplateError::Cycle {
            path: path.into_iter().map(name).collect(),
        },
        DagError::SelfDependency { step } => TemplateError::SelfDependency { step: name(step) },
        DagError::DuplicateParent { step, parent } => TemplateError::DuplicateDependency {
            step: name(step),
            dependency: name(parent),
        },
        DagError::ParentOutOfRange { step, parent, .. } => TemplateError::UnknownDependency {
            step: name(step),
            dependency: name(parent),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    const MINIMAL: &str = "
name: minimal
namespace: tests
version: 1.0.0
steps:
  - name: only
    handler_class: tasker.test
";

    #[test]
    fn defaults_are_filled_in() {
        let template = TaskTemplate::from_yaml_str(MINIMAL).unwrap();
        let step = &template.steps()[0];
        assert_eq!(step.depends_on, Vec::<String>::new());
        assert_eq!(step.handler_config, Map::new());
        assert!(step.retryable);
        assert_eq!(step.retry_limit, 3);
        assert_eq!(step.timeout_ms, 30_000);
        assert_eq!(step.backoff, None);
        assert_eq!(template.description(), None);
        assert_eq!(template.context_schema(), None);
        assert!(template.environments().is_empty());
    }

    #[test]
    fn template_backoff_is_the_default_for_steps_without_one() {
        let yaml = "
name: b
namespace: tests
version: 1.0.0
backoff: { base_delay_ms: 10, max_delay_ms: 100 }
steps:
  - name: inherits
    handler_class: tasker.test
  - name: own
    handler_class: tasker.test
    backoff: { base_delay_ms: 20, max_delay_ms: 200, multiplier: 3.0, jitter: 0.0 }
";
        let template = TaskTemplate::from_yaml_str(yaml).unwrap();
        let inherited = template.step("inherits").unwrap().backoff.unwrap();
        assert_eq!(inherited.base_delay_ms, 10);
        assert_eq!(inherited.max_delay_ms, 100);
        assert_eq!(inherited.multiplier, BackoffPolicy::default().multiplier);
        let own = template.step("own").unwrap().backoff.unwrap();
        assert_eq!(own.base_delay_ms, 20);
        assert_eq!(own.multiplier, 3.0);
    }

    #[test]
    fn null_lists_and_maps_mean_empty() {
        let yaml = "
name: n
namespace: tests
version: 1.0.0
steps:
  - name: a
    handler_class: tasker.test
    depends_on:
    handler_config:
";
        let template = TaskTemplate::from_yaml_str(yaml).unwrap();
        assert!(template.steps()[0].depends_on.is_empty());
        assert!(template.steps()[0].handler_config.is_empty());
    }

    #[test]
    fn environment_overrides_merge_config_and_replace_settings() {
        let yaml = "
name: e
namespace: tests
version: 1.0.0
steps:
  - name: pay
    handler_class: tasker.test
    handler_config:
      gateway: { url: http://sandbox, timeout_s: 5 }
      currencies: [usd, eur]
      verbose: true
  - name: ship
    handler_class: tasker.test
    depends_on: [pay]
environments:
  production:
    steps:
      pay:
        handler_config:
          gateway: { url: https://live }
          currencies: [usd]
        retry_limit: 5
        timeout_ms: 60000
        retryable: false
        backoff: { base_delay_ms: 50 }
";
        let template = TaskTemplate::from_yaml_str(yaml).unwrap();
        let production = template.for_environment("production");
        let pay = production.step("pay").unwrap();
        assert_eq!(
            Value::Object(pay.handler_config.clone()),
            json!({
                "gateway": { "url": "https://live", "timeout_s": 5 },
                "currencies": ["usd"],
                "verbose": true
            })
        );
        assert_eq!(pay.retry_limit, 5);
        assert_eq!(pay.timeout_ms, 60_000);
        assert!(!pay.retryable);
        assert_eq!(pay.backoff.unwrap().base_delay_ms, 50);
        assert_eq!(
            pay.backoff.unwrap().max_delay_ms,
            BackoffPolicy::default().max_delay_ms
        );
        // Untouched step and the base template are unchanged.
        assert_eq!(production.step("ship"), template.step("ship"));
        assert_eq!(template.step("pay").unwrap().retry_limit, 3);
        // Unknown environment: no overrides. Applying twice: same as once.
        assert_eq!(template.for_environment("staging"), template);
        assert_eq!(production.for_environment("production"), production);
    }

    #[test]
    fn serialized_template_loads_back_equal() {
        let yaml = "
name: r
namespace: tests
version: 2.1.0-rc.1
description: round trip
context_schema: { type: object, required: [id] }
backoff: { base_delay_ms: 10 }
steps:
  - name: a
    handler_class: tasker.test
    handler_config: { nested: { x: [1, 2] } }
  - name: b
    handler_class: tasker.test
    depends_on: [a]
    retry_limit: 1
environments:
  production:
    steps:
      b: { timeout_ms: 5 }
";
        let template = TaskTemplate::from_yaml_str(yaml).unwrap();
        let json = serde_json::to_string(&template).unwrap();
        assert_eq!(TaskTemplate::from_yaml_str(&json).unwrap(), template);
        let from_json: TaskTemplate = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, template);
    }

    #[test]
    fn deserializing_runs_validation() {
        let json = json!({
            "name": "x", "namespace": "tests", "version": "1.0.0",
            "steps": [{ "name": "a", "handler_class": "h", "depends_on": ["a"] }]
        });
        let error = serde_json::from_value::<TaskTemplate>(json).unwrap_err();
        assert!(
            error.to_string().contains("step `a` depends on itself"),
            "{error}"
        );
    }

    #[test]
    fn names_allow_unicode_letters_but_not_slashes() {
        assert!(check_name("step name", "überprüfen_2.v-1").is_ok());
        let error = check_name("namespace", "a/b").unwrap_err();
        assert!(error.to_string().contains("'/'"), "{error}");
    }

    #[test]
    fn merge_keys_share_settings_and_step_keys_win() {
        let yaml = "
name: merged
namespace: tests
version: 1.0.0
x-step-defaults: &defaults
  handler_class: tasker.test
  retry_limit: 5
  handler_config: { region: eu }
steps:
  - name: a
    <<: *defaults
  - <<: *defaults
    name: b
    depends_on: [a]
    retry_limit: 2
";
        let template = TaskTemplate::from_yaml_str(yaml).unwrap();
        let a = template.step("a").unwrap();
        assert_eq!(a.handler_class, "tasker.test");
        assert_eq!(a.retry_limit, 5);
        assert_eq!(a.handler_config["region"], json!("eu"));
        assert_eq!(template.step("b").unwrap().retry_limit, 2);
    }

    #[test]
    fn errors_in_merged_documents_name_the_step_without_a_position() {
        let yaml = "
name: merged
namespace: tests
version: 1.0.0
steps:
  - &first
    name: a
    handler_class: tasker.test
  - <<: *first
    name: b
    retry_limt: 1
";
        let error = TaskTemplate::from_yaml_str(yaml).unwrap_err();
        assert!(
            matches!(
                &error,
                TemplateError::UnknownKey { key, location, position: None, .. }
                    if key == "retry_limt" && location == "step `b` (steps[1])"
            ),
            "{error:?}"
        );
        assert!(!error.to_string().contains("line"), "{error}");
    }

    #[test]
    fn x_keys_are_only_ignored_at_the_top_level() {
        let yaml = "
name: n
namespace: tests
version: 1.0.0
x-notes: anything
steps:
  - name: a
    handler_class: tasker.test
    x-notes: not here
";
        let error = TaskTemplate::from_yaml_str(yaml).unwrap_err();
        assert!(
            matches!(&error, TemplateError::UnknownKey { key, .. } if key == "x-notes"),
            "{error}"
        );
    }

    #[test]
    fn step_lookup_by_name_and_index() {
        let template = TaskTemplate::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(template.step_index("only"), Some(0));
        assert_eq!(template.step_index("missing"), None);
        assert_eq!(template.step("only").unwrap().handler_class, "tasker.test");
    }
}
