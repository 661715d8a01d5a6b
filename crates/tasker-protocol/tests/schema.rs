//! The JSON Schemas in `docs/protocol/schema/` agree with the vectors and with what this crate
//! encodes.

mod common;

use common::{
    decode, load_vectors, protocol_dir, sample_orchestrator_messages, sample_worker_messages,
    to_value,
};
use jsonschema::Validator;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tasker_protocol::{OrchestratorMessage, WorkerMessage, encode};

/// Every schema file, compiled, by file stem.
fn schemas() -> BTreeMap<String, Validator> {
    let dir = protocol_dir().join("schema");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("schema is readable");
            let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
            assert!(
                jsonschema::meta::is_valid(&schema),
                "{} is not a valid JSON Schema",
                path.display()
            );
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{} must declare draft 2020-12",
                path.display()
            );
            let validator = jsonschema::validator_for(&schema)
                .unwrap_or_else(|error| panic!("{} does not compile: {error}", path.display()));
            let stem = path
                .file_stem()
                .expect("named")
                .to_string_lossy()
                .into_owned();
            (stem, validator)
        })
        .collect()
}

/// Checks `message` against `envelope.json` and `<message_type>.json`.
fn check(schemas: &BTreeMap<String, Validator>, message: &Value, what: &str) -> Vec<String> {
    let message_type = message["message_type"].as_str().unwrap_or("<none>");
    let mut failures = Vec::new();
    for name in ["envelope", message_type] {
        let Some(validator) = schemas.get(name) else {
            failures.push(format!("{what}: no schema {name}.json"));
            continue;
        };
        for error in validator.iter_errors(message) {
            failures.push(format!(
                "{what}: {name}.json: {error} at {}",
                error.instance_path()
            ));
        }
    }
    failures
}

#[test]
fn there_is_one_schema_per_message_type_plus_the_envelope() {
    let found: BTreeSet<String> = schemas().into_keys().collect();
    let mut expected: BTreeSet<String> = WorkerMessage::MESSAGE_TYPES
        .iter()
        .chain(OrchestratorMessage::MESSAGE_TYPES)
        .map(|message_type| (*message_type).to_owned())
        .collect();
    expected.insert("envelope".to_owned());
    assert_eq!(found, expected);
}

#[test]
fn every_valid_vector_matches_its_schema() {
    let schemas = schemas();
    let mut failures = Vec::new();
    for vector in load_vectors("valid") {
        failures.extend(check(&schemas, &vector.body["message"], &vector.name));
        if let Some(canonical) = vector.body.get("canonical") {
            failures.extend(check(
                &schemas,
                canonical,
                &format!("{} (canonical)", vector.name),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_message_this_crate_encodes_matches_its_schema() {
    let schemas = schemas();
    let mut failures = Vec::new();
    for (name, message) in sample_worker_messages() {
        failures.extend(check(&schemas, &to_value(&encode(&message)), name));
    }
    for (name, message) in sample_orchestrator_messages() {
        failures.extend(check(&schemas, &to_value(&encode(&message)), name));
    }
    for vector in load_vectors("valid") {
        let frame = serde_json::to_vec(&vector.body["message"]).expect("serializes");
        let decoded = decode(vector.direction(), &frame, &vector.limits()).expect("valid vector");
        failures.extend(check(
            &schemas,
            &to_value(&decoded.encode()),
            &format!("{} (re-encoded)", vector.name),
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The schemas are never stricter than the spec, and they catch the structural mistakes:
/// these invalid vectors (type, enum, required-field and range errors) must fail them too.
#[test]
fn schemas_reject_structurally_invalid_vectors() {
    let schemas = schemas();
    let mut failures = Vec::new();
    for vector in load_vectors("invalid") {
        let code = vector.body["expected_error"].as_str().expect("code");
        let Some(raw) = vector.body.get("raw").and_then(Value::as_str) else {
            continue;
        };
        let Ok(message @ Value::Object(_)) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        if vector.body.get("limits").is_some() {
            continue;
        }
        // Errors the schema language cannot see: byte lengths, cross-field rules, integers
        // written as 8.0 (a schema "integer"), and direction (heartbeat has both shapes).
        let schema_visible = matches!(
            code,
            "missing_field"
                | "invalid_field_type"
                | "invalid_field_value"
                | "unsupported_protocol_version"
        ) && !vector.name.ends_with("capacity_float_form")
            && !vector.name.ends_with("capacity_exponent")
            && !vector.name.contains("duplicate")
            && !vector.name.contains("timestamp_leap")
            && !vector
                .name
                .starts_with("heartbeat.orchestrator_fields_from_worker")
            && !vector.name.ends_with("protocol_version_leading_zero")
            && !vector.name.ends_with("step_id_beyond_i64");
        if !schema_visible {
            continue;
        }
        if check(&schemas, &message, &vector.name).is_empty() {
            failures.push(format!("{}: schema accepts it ({code})", vector.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
