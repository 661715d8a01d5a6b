//! Checking a task's context against its template's `context_schema`.
//!
//! The schema is a JSON Schema (the draft named by its `$schema`, else 2020-12), with `format`
//! assertions on (`format: email` rejects a malformed address). Nothing is fetched: a `$ref` to
//! another document that is not embedded in the schema makes the schema invalid.
//!
//! Compile the schema once per template with [`ContextValidator::for_template`] and reuse the
//! validator for every task; [`ContextValidator::validate`] reports every violation, each with
//! the JSON pointer of the offending field.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::template::{TaskTemplate, TemplateError};

/// A compiled context schema, or the absence of one (every context is then accepted).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContextValidator {
    validator: Option<jsonschema::Validator>,
}

impl ContextValidator {
    /// Compiles a JSON Schema for task contexts.
    ///
    /// # Errors
    ///
    /// [`TemplateError::InvalidContextSchema`] when the schema does not satisfy its draft's
    /// meta-schema (`type: integr`, `required: order_id`), has a bad regular expression, or
    /// refers to a document it does not embed.
    pub fn new(schema: &Value) -> Result<Self, TemplateError> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|error| TemplateError::InvalidContextSchema {
                pointer: error.instance_path().as_str().to_owned(),
                message: schema_error_message(&error),
            })?;
        Ok(Self {
            validator: Some(validator),
        })
    }

    /// A validator that accepts every context: for templates without a `context_schema`.
    #[must_use]
    pub fn accept_any() -> Self {
        Self { validator: None }
    }

    /// The validator for a template's `context_schema` ([`ContextValidator::accept_any`] when it
    /// has none).
    #[must_use]
    pub fn for_template(template: &TaskTemplate) -> Self {
        match template.context_schema() {
            Some(schema) => Self::new(schema)
                .expect("a TaskTemplate's context_schema was compiled when the template loaded"),
            None => Self::accept_any(),
        }
    }

    /// Checks a context.
    ///
    /// # Errors
    ///
    /// A [`ContextError`] listing every violation.
    pub fn validate(&self, context: &Value) -> Result<(), ContextError> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let violations: Vec<ContextViolation> = validator
            .iter_errors(context)
            .map(|error| ContextViolation::from_error(&error))
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ContextError { violations })
        }
    }

    /// Whether a context is valid (faster than [`ContextValidator::validate`]: stops at the
    /// first violation and builds no messages).
    #[must_use]
    pub fn is_valid(&self, context: &Value) -> bool {
        self.validator
            .as_ref()
            .is_none_or(|validator| validator.is_valid(context))
    }
}

/// The message for a schema that does not compile. An unresolvable `$ref` gets a hint instead of
/// the library's remark about its HTTP feature.
fn schema_error_message(error: &jsonschema::ValidationError<'_>) -> String {
    let message = error.to_string();
    if matches!(error.kind(), ValidationErrorKind::Referencing(_)) {
        let reason = message
            .split_once(" and retrieving it failed")
            .map_or(message.as_str(), |(reason, _)| reason);
        format!(
            "{reason}; Tasker never fetches schemas, so embed referenced definitions (under \
             `$defs`) in the context_schema itself"
        )
    } else {
        message
    }
}

/// A task context that does not satisfy its template's `context_schema`: every violation found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the task context does not match the template's context_schema: {}",
    list(violations)
)]
pub struct ContextError {
    /// The violations, in the order the schema's checks found them. Never empty.
    pub violations: Vec<ContextViolation>,
}

fn list(violations: &[ContextViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One way a context breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextViolation {
    /// JSON pointer to the offending value, e.g. `/customer/email`; empty for the whole context.
    /// For a missing required property it points at where the property should be.
    pub pointer: String,
    /// The JSON Schema keyword that failed, e.g. `type`, `required`, `minItems`.
    pub keyword: String,
    /// Why, e.g. `42 is not of type "string"`.
    pub message: String,
}

impl ContextViolation {
    fn from_error(error: &jsonschema::ValidationError<'_>) -> Self {
        let mut pointer = error.instance_path().as_str().to_owned();
        let message = match error.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                "is required but missing".to_owned()
            }
            _ => error.to_string(),
        };
        Self {
            pointer,
            keyword: error.kind().keyword().to_owned(),
            message,
        }
    }
}

impl fmt::Display for ContextViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "the context: {}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn order_schema() -> Value {
        json!({
            "type": "object",
            "required": ["order_id", "customer", "items"],
            "properties": {
                "order_id": { "type": "integer" },
                "customer": {
                    "type": "object",
                    "required": ["email"],
                    "properties": { "email": { "type": "string", "format": "email" } }
                },
                "items": { "type": "array", "minItems": 1 }
            }
        })
    }

    #[test]
    fn valid_context_passes() {
        let validator = ContextValidator::new(&order_schema()).unwrap();
        let context = json!({
            "order_id": 7, "customer": { "email": "a@example.com" }, "items": [{ "sku": "x" }]
        });
        assert_eq!(validator.validate(&context), Ok(()));
        assert!(validator.is_valid(&context));
    }

    #[test]
    fn nested_wrong_type_points_at_the_field() {
        let validator = ContextValidator::new(&order_schema()).unwrap();
        let context = json!({ "order_id": 7, "customer": { "email": 42 }, "items": [1] });
        let error = validator.validate(&context).unwrap_err();
        assert_eq!(error.violations.len(), 1, "{error}");
        assert_eq!(error.violations[0].pointer, "/customer/email");
        assert_eq!(error.violations[0].keyword, "type");
        assert!(
            error.violations[0].message.contains("\"string\""),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("/customer/email: 42 is not of type"),
            "{error}"
        );
        assert!(!validator.is_valid(&context));
    }

    #[test]
    fn every_violation_is_reported() {
        let validator = ContextValidator::new(&order_schema()).unwrap();
        let context = json!({ "order_id": "seven", "customer": {}, "items": [] });
        let error = validator.validate(&context).unwrap_err();
        let mut found: Vec<(&str, &str)> = error
            .violations
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        found.sort_unstable();
        assert_eq!(
            found,
            vec![
                ("/customer/email", "required"),
                ("/items", "minItems"),
                ("/order_id", "type"),
            ],
            "{error}"
        );
    }

    #[test]
    fn missing_top_level_property_and_wrong_root_type() {
        let validator = ContextValidator::new(&order_schema()).unwrap();
        let error = validator
            .validate(&json!({ "customer": { "email": "a@b.c" }, "items": [1] }))
            .unwrap_err();
        assert_eq!(error.violations[0].pointer, "/order_id");
        assert_eq!(error.violations[0].message, "is required but missing");

        let error = validator.validate(&json!([1, 2])).unwrap_err();
        assert_eq!(error.violations[0].pointer, "");
        assert!(error.to_string().contains("the context: "), "{error}");
    }

    #[test]
    fn email_format_is_checked() {
        let validator = ContextValidator::new(&order_schema()).unwrap();
        let context =
            json!({ "order_id": 7, "customer": { "email": "not an email" }, "items": [1] });
        let error = validator.validate(&context).unwrap_err();
        assert_eq!(error.violations[0].pointer, "/customer/email");
        assert_eq!(error.violations[0].keyword, "format");
    }

    #[test]
    fn pointer_escapes_property_names() {
        let validator = ContextValidator::new(&json!({ "required": ["a/b"] })).unwrap();
        let error = validator.validate(&json!({})).unwrap_err();
        assert_eq!(error.violations[0].pointer, "/a~1b");
    }

    #[test]
    fn no_schema_accepts_anything() {
        let validator = ContextValidator::accept_any();
        assert_eq!(validator.validate(&json!(null)), Ok(()));
        assert!(validator.is_valid(&json!("anything")));
    }

    #[test]
    fn invalid_schemas_are_rejected_with_their_location() {
        let error = ContextValidator::new(&json!({ "properties": { "id": { "type": "integr" } } }))
            .unwrap_err();
        let TemplateError::InvalidContextSchema { pointer, .. } = &error else {
            panic!("unexpected error {error}");
        };
        assert_eq!(pointer, "/properties/id/type");

        let error = ContextValidator::new(&json!({ "required": "order_id" })).unwrap_err();
        assert!(
            matches!(error, TemplateError::InvalidContextSchema { .. }),
            "{error}"
        );
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let schema = json!({ "$ref": "https://example.invalid/schemas/order.json" });
        let error = ContextValidator::new(&schema).unwrap_err();
        assert!(
            matches!(error, TemplateError::InvalidContextSchema { .. }),
            "{error}"
        );
    }
}
