//! The wire JSON of one message of every kind, snapshotted so that any change to the wire
//! format shows up in review (`tests/snapshots/*.snap`).

mod common;

use common::{sample_orchestrator_messages, sample_worker_messages, to_value};
use tasker_protocol::encode;

#[test]
fn worker_messages() {
    for (name, message) in sample_worker_messages() {
        insta::assert_json_snapshot!(name, to_value(&encode(&message)));
    }
}

#[test]
fn orchestrator_messages() {
    for (name, message) in sample_orchestrator_messages() {
        insta::assert_json_snapshot!(name, to_value(&encode(&message)));
    }
}
