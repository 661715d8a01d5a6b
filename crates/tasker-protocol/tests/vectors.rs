//! The shared test vectors in `docs/protocol/vectors/`: every valid vector decodes and
//! re-encodes to its canonical form; every invalid vector is rejected with exactly its code and
//! a message containing its detail.

mod common;

use common::{Decoded, decode, load_vectors, to_value};
use serde_json::Value;
use std::collections::BTreeSet;
use tasker_protocol::{Direction, ErrorCode, OrchestratorMessage, WorkerMessage};

#[test]
fn every_valid_vector_decodes_and_reencodes_to_its_canonical_form() {
    let mut failures = Vec::new();
    for vector in load_vectors("valid") {
        let message = &vector.body["message"];
        let canonical = vector.body.get("canonical").unwrap_or(message);
        let frame = serde_json::to_vec(message).expect("a JSON value serializes");
        let decoded = match decode(vector.direction(), &frame, &vector.limits()) {
            Ok(decoded) => decoded,
            Err(error) => {
                failures.push(format!(
                    "{}: rejected: {} ({error})",
                    vector.name,
                    error.code()
                ));
                continue;
            }
        };
        if Some(decoded.message_type()) != message["message_type"].as_str() {
            failures.push(format!(
                "{}: decoded as {}",
                vector.name,
                decoded.message_type()
            ));
        }
        let reencoded = decoded.encode();
        if to_value(&reencoded) != *canonical {
            failures.push(format!(
                "{}: re-encoded as\n  {}\nexpected\n  {canonical}",
                vector.name,
                String::from_utf8_lossy(&reencoded)
            ));
        }
        // The canonical form is a fixed point: decoding it gives the same message again.
        match decode(vector.direction(), &reencoded, &vector.limits()) {
            Ok(again) if again == decoded => {}
            other => failures.push(format!(
                "{}: canonical form decodes to {other:?}",
                vector.name
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_invalid_vector_is_rejected_with_its_code_and_detail() {
    let mut failures = Vec::new();
    for vector in load_vectors("invalid") {
        let expected_code = vector.body["expected_error"]
            .as_str()
            .expect("expected_error");
        let expected_detail = vector.body["expected_detail"]
            .as_str()
            .expect("expected_detail");
        match decode(vector.direction(), &vector.raw_frame(), &vector.limits()) {
            Ok(decoded) => failures.push(format!("{}: accepted as {decoded:?}", vector.name)),
            Err(error) => {
                let message = error.to_string();
                if error.code().as_str() != expected_code {
                    failures.push(format!(
                        "{}: code {} (\"{message}\"), expected {expected_code}",
                        vector.name,
                        error.code()
                    ));
                } else if !message.contains(expected_detail) {
                    failures.push(format!(
                        "{}: message \"{message}\" lacks \"{expected_detail}\"",
                        vector.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vector_files_have_the_documented_shape() {
    for vector in load_vectors("valid") {
        let keys: BTreeSet<&str> = object_keys(&vector.body);
        let allowed = BTreeSet::from(["description", "direction", "message", "canonical"]);
        assert!(keys.is_subset(&allowed), "{}: keys {keys:?}", vector.name);
        assert!(vector.body["description"].is_string(), "{}", vector.name);
        assert!(vector.body["message"].is_object(), "{}", vector.name);
        let message_type = vector.body["message"]["message_type"]
            .as_str()
            .expect("message_type");
        assert!(
            vector.name.starts_with(&format!("{message_type}.")),
            "{}: file name must start with its message_type",
            vector.name
        );
    }
    for vector in load_vectors("invalid") {
        let keys: BTreeSet<&str> = object_keys(&vector.body);
        let allowed = BTreeSet::from([
            "description",
            "direction",
            "expected_error",
            "expected_detail",
            "raw",
            "raw_hex",
            "limits",
        ]);
        assert!(keys.is_subset(&allowed), "{}: keys {keys:?}", vector.name);
        assert!(
            keys.contains("raw") != keys.contains("raw_hex"),
            "{}: exactly one of raw and raw_hex",
            vector.name
        );
        let code = vector.body["expected_error"]
            .as_str()
            .expect("expected_error");
        assert!(
            ErrorCode::parse(code).is_some(),
            "{}: unknown code {code}",
            vector.name
        );
        assert!(
            !vector.body["expected_detail"]
                .as_str()
                .expect("detail")
                .is_empty(),
            "{}: empty detail",
            vector.name
        );
        let _ = vector.direction();
    }
}

fn object_keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("a vector is an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn the_vectors_cover_every_message_kind_and_every_decode_error() {
    let mut kinds = BTreeSet::new();
    for vector in load_vectors("valid") {
        let message_type = vector.body["message"]["message_type"]
            .as_str()
            .expect("type");
        kinds.insert((vector.direction().as_str(), message_type.to_owned()));
    }
    for message_type in WorkerMessage::MESSAGE_TYPES {
        assert!(
            kinds.contains(&(
                Direction::WorkerToOrchestrator.as_str(),
                (*message_type).to_owned()
            )),
            "no valid worker vector for {message_type}"
        );
    }
    for message_type in OrchestratorMessage::MESSAGE_TYPES {
        assert!(
            kinds.contains(&(
                Direction::OrchestratorToWorker.as_str(),
                (*message_type).to_owned()
            )),
            "no valid orchestrator vector for {message_type}"
        );
    }

    let codes: BTreeSet<String> = load_vectors("invalid")
        .iter()
        .map(|vector| {
            vector.body["expected_error"]
                .as_str()
                .expect("code")
                .to_owned()
        })
        .collect();
    let decode_codes = [
        ErrorCode::FrameTooLarge,
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::MissingField,
        ErrorCode::InvalidFieldType,
        ErrorCode::InvalidFieldValue,
        ErrorCode::LimitExceeded,
        ErrorCode::InconsistentMessage,
        ErrorCode::UnsupportedProtocolVersion,
        ErrorCode::UnknownMessageType,
    ];
    for code in decode_codes {
        assert!(
            codes.contains(code.as_str()),
            "no invalid vector expects {code}"
        );
    }
}

#[test]
fn decoding_does_not_depend_on_field_order_or_whitespace() {
    for vector in load_vectors("valid") {
        let message = vector.body["message"].as_object().expect("object");
        let mut reversed = serde_json::Map::new();
        for (key, value) in message.iter().rev() {
            reversed.insert(key.clone(), value.clone());
        }
        let pretty = serde_json::to_vec_pretty(&Value::Object(reversed)).expect("serializes");
        let compact = serde_json::to_vec(message).expect("serializes");
        let from_pretty = decode(vector.direction(), &pretty, &vector.limits());
        let from_compact = decode(vector.direction(), &compact, &vector.limits());
        assert_eq!(from_pretty, from_compact, "{}", vector.name);
    }
}

#[test]
fn decoded_messages_keep_the_peers_minor_version() {
    let vector = load_vectors("valid")
        .into_iter()
        .find(|vector| vector.name == "hello.higher_minor_unknown_fields")
        .expect("the forward-compatibility vector exists");
    let frame = serde_json::to_vec(&vector.body["message"]).expect("serializes");
    let decoded = decode(vector.direction(), &frame, &vector.limits()).expect("valid");
    let Decoded::Worker(message) = decoded else {
        panic!("a hello is a worker message");
    };
    assert_eq!(message.protocol_version().to_string(), "1.7");
}
