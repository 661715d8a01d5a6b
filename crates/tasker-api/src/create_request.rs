//! Reading the body of `POST /v1/tasks` into a [`TaskRequest`], reporting every problem at once.
//!
//! The body is parsed in two steps so each kind of mistake gets its own precise error: first as
//! JSON (a syntax error is `malformed_json` with serde's line and column), then field by field
//! (absent required fields are `missing_field`; wrong types and unknown fields are
//! `invalid_field`, each with its JSON pointer).

use serde_json::{Map, Value};
use tasker_engine::TaskRequest;

use crate::error::{ApiError, ErrorDetail};

/// The fields `POST /v1/tasks` accepts.
pub const CREATE_TASK_FIELDS: [&str; 9] = [
    "namespace",
    "name",
    "version",
    "context",
    "idempotency_key",
    "initiator",
    "source_system",
    "reason",
    "tags",
];

/// Parses and checks a `POST /v1/tasks` body.
///
/// # Errors
///
/// [`ApiError::MalformedJson`], [`ApiError::MissingField`] or [`ApiError::InvalidField`].
pub fn parse_create_task(body: &[u8]) -> Result<TaskRequest, ApiError> {
    read_create_task(parse_json(body)?)
}

/// Most tasks in one `POST /v1/tasks/bulk`.
pub const MAX_BULK_TASKS: usize = 1000;

/// Parses and checks a `POST /v1/tasks/bulk` body: `{"tasks": [<create request>, …]}` with 1 to
/// [`MAX_BULK_TASKS`] requests, each read as [`parse_create_task`] reads one. Every problem of
/// every request is reported, each pointer prefixed with `/tasks/{index}`.
///
/// # Errors
///
/// [`ApiError::MalformedJson`], [`ApiError::MissingField`] or [`ApiError::InvalidField`].
pub fn parse_create_tasks(body: &[u8]) -> Result<Vec<TaskRequest>, ApiError> {
    let value = parse_json(body)?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::InvalidField(vec![ErrorDetail::at(
            "",
            format!(
                "the request body must be a JSON object {{\"tasks\": [...]}}, not {}",
                kind_of(&value)
            ),
        )]));
    };
    let mut invalid: Vec<ErrorDetail> = fields
        .keys()
        .filter(|key| key.as_str() != "tasks")
        .map(|key| {
            ErrorDetail::at(
                format!("/{}", key.replace('~', "~0").replace('/', "~1")),
                "is not a known field (known: tasks)",
            )
        })
        .collect();
    let items = match fields.remove("tasks") {
        Some(Value::Array(items)) if items.is_empty() => {
            invalid.push(ErrorDetail::at("/tasks", "must hold at least one task"));
            Vec::new()
        }
        Some(Value::Array(items)) if items.len() > MAX_BULK_TASKS => {
            invalid.push(ErrorDetail::at(
                "/tasks",
                format!(
                    "holds {} tasks; at most {MAX_BULK_TASKS} per request",
                    items.len()
                ),
            ));
            Vec::new()
        }
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(ApiError::MissingField(vec![ErrorDetail::at(
                "/tasks",
                "is required but missing",
            )]));
        }
        Some(other) => {
            invalid.push(ErrorDetail::at(
                "/tasks",
                format!("must be an array of tasks, not {}", kind_of(&other)),
            ));
            Vec::new()
        }
    };
    let mut missing = Vec::new();
    let mut requests = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match read_create_task(item).map_err(|e| e.with_pointer_prefix(&format!("/tasks/{index}")))
        {
            Ok(request) => requests.push(request),
            Err(ApiError::MissingField(details)) => missing.extend(details),
            Err(ApiError::InvalidField(details)) => invalid.extend(details),
            Err(other) => return Err(other),
        }
    }
    if !invalid.is_empty() {
        missing.extend(invalid);
        return Err(ApiError::InvalidField(missing));
    }
    if !missing.is_empty() {
        return Err(ApiError::MissingField(missing));
    }
    Ok(requests)
}

/// The body as JSON, or `malformed_json` with serde's line and column.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let text = error.to_string();
        // serde_json appends " at line L column C"; keep only the reason.
        let reason = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(reason, _)| reason)
            .to_owned();
        ApiError::MalformedJson {
            reason,
            line: error.line(),
            column: error.column(),
        }
    })
}

/// Checks one create request, field by field.
fn read_create_task(value: Value) -> Result<TaskRequest, ApiError> {
    let Value::Object(mut fields) = value else {
        return Err(ApiError::InvalidField(vec![ErrorDetail::at(
            "",
            format!(
                "the request body must be a JSON object, not {}",
                kind_of(&value)
            ),
        )]));
    };

    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    let mut required_string = |fields: &mut Map<String, Value>, key: &str| -> String {
        match fields.remove(key) {
            None | Some(Value::Null) => {
                missing.push(ErrorDetail::at(
                    format!("/{key}"),
                    "is required but missing",
                ));
                String::new()
            }
            Some(Value::String(s)) if s.is_empty() => {
                invalid.push(ErrorDetail::at(format!("/{key}"), "must not be empty"));
                String::new()
            }
            Some(Value::String(s)) => s,
            Some(other) => {
                invalid.push(ErrorDetail::at(
                    format!("/{key}"),
                    format!("must be a string, not {}", kind_of(&other)),
                ));
                String::new()
            }
        }
    };
    let namespace = required_string(&mut fields, "namespace");
    let name = required_string(&mut fields, "name");

    let mut optional_string = |fields: &mut Map<String, Value>, key: &str| match fields.remove(key)
    {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            invalid.push(ErrorDetail::at(
                format!("/{key}"),
                format!("must be a string, not {}", kind_of(&other)),
            ));
            None
        }
    };
    let version = optional_string(&mut fields, "version");
    let idempotency_key = optional_string(&mut fields, "idempotency_key");
    let initiator = optional_string(&mut fields, "initiator");
    let source_system = optional_string(&mut fields, "source_system");
    let reason = optional_string(&mut fields, "reason");

    let context = match fields.remove("context") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(context)) => Value::Object(context),
        Some(other) => {
            invalid.push(ErrorDetail::at(
                "/context",
                format!("must be a JSON object, not {}", kind_of(&other)),
            ));
            Value::Null
        }
    };

    let tags = match fields.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(index, item)| match item {
                Value::String(tag) => Some(tag),
                other => {
                    invalid.push(ErrorDetail::at(
                        format!("/tags/{index}"),
                        format!("must be a string, not {}", kind_of(&other)),
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            invalid.push(ErrorDetail::at(
                "/tags",
                format!("must be an array of strings, not {}", kind_of(&other)),
            ));
            Vec::new()
        }
    };

    for unknown in fields.keys() {
        invalid.push(ErrorDetail::at(
            format!("/{}", unknown.replace('~', "~0").replace('/', "~1")),
            format!(
                "is not a known field (known: {})",
                CREATE_TASK_FIELDS.join(", ")
            ),
        ));
    }

    if !invalid.is_empty() {
        missing.extend(invalid);
        return Err(ApiError::InvalidField(missing));
    }
    if !missing.is_empty() {
        return Err(ApiError::MissingField(missing));
    }
    Ok(TaskRequest {
        namespace,
        name,
        version,
        context,
        idempotency_key,
        initiator,
        source_system,
        reason,
        tags,
    })
}

/// `a string`, `an array`, … for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<TaskRequest, ApiError> {
        parse_create_task(value.to_string().as_bytes())
    }

    #[test]
    fn a_bulk_request_reports_every_problem_with_its_task_index() {
        let requests = parse_create_tasks(
            json!({"tasks": [{"namespace": "n", "name": "a"}, {"namespace": "n", "name": "b"}]})
                .to_string()
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].name, "b");
        let error = parse_create_tasks(
            json!({"tasks": [{"namespace": "n"}, {"namespace": "n", "name": 3, "x": 1}], "y": 0})
                .to_string()
                .as_bytes(),
        )
        .expect_err("invalid");
        let pointers: Vec<String> = error
            .details()
            .into_iter()
            .filter_map(|d| d.pointer)
            .collect();
        assert_eq!(
            pointers,
            vec!["/tasks/0/name", "/y", "/tasks/1/name", "/tasks/1/x"],
            "{error}"
        );
        let empty = parse_create_tasks(br#"{"tasks": []}"#).expect_err("empty");
        assert_eq!(empty.code(), "invalid_field");
        let missing = parse_create_tasks(b"{}").expect_err("no tasks");
        assert_eq!(missing.code(), "missing_field");
    }

    #[test]
    fn a_full_request_is_read() {
        let request = parse(json!({
            "namespace": "examples", "name": "diamond", "version": "1.0.0",
            "context": {"a": 1}, "idempotency_key": "k", "initiator": "me",
            "source_system": "cli", "reason": "test", "tags": ["x", "y"]
        }))
        .expect("valid");
        assert_eq!(request.namespace, "examples");
        assert_eq!(request.version.as_deref(), Some("1.0.0"));
        assert_eq!(request.context, json!({"a": 1}));
        assert_eq!(request.tags, vec!["x", "y"]);
        assert_eq!(request.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn an_absent_context_is_empty() {
        let request = parse(json!({"namespace": "a", "name": "b"})).expect("valid");
        assert_eq!(request.context, json!({}));
        assert!(request.tags.is_empty());
    }

    #[test]
    fn syntax_errors_carry_the_position() {
        let error = parse_create_task(b"{\n  \"namespace\": \"a\",\n  oops\n}").expect_err("bad");
        let ApiError::MalformedJson { line, column, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!((*line, *column), (3, 3));
        assert!(error.to_string().contains("line 3, column 3"), "{error}");
        assert!(!error.to_string().contains("line 3 column 3 at"), "{error}");
    }

    #[test]
    fn every_missing_field_is_listed() {
        let error = parse(json!({"context": {}})).expect_err("missing");
        let ApiError::MissingField(details) = &error else {
            panic!("{error:?}");
        };
        let pointers: Vec<_> = details.iter().filter_map(|d| d.pointer.clone()).collect();
        assert_eq!(pointers, vec!["/namespace", "/name"]);
    }

    #[test]
    fn wrong_types_and_unknown_fields_are_listed_with_missing_ones() {
        let error = parse(json!({
            "name": 5, "context": [1], "tags": ["ok", 3], "contxt": {}
        }))
        .expect_err("invalid");
        let ApiError::InvalidField(details) = &error else {
            panic!("{error:?}");
        };
        let pointers: Vec<_> = details.iter().filter_map(|d| d.pointer.clone()).collect();
        assert_eq!(
            pointers,
            vec!["/namespace", "/name", "/context", "/tags/1", "/contxt"]
        );
        assert!(details[4].message.contains("not a known field"));
    }

    #[test]
    fn a_non_object_body_is_refused() {
        let error = parse(json!([1, 2])).expect_err("array");
        assert_eq!(error.code(), "invalid_field");
        assert!(error.to_string().contains("not an array"), "{error}");
    }
}
