"""Conformance with the protocol's test vectors (docs/protocol/vectors, spec §16): the same
files the Rust crate and the Ruby SDK are tested against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import VECTORS_DIR, assert_matches_schema, json_equal

from tasker_worker.protocol import Limits, ProtocolError, decode_message, encode
from tasker_worker.protocol import errors as codes

VALID = sorted((VECTORS_DIR / "valid").glob("*.json"))
INVALID = sorted((VECTORS_DIR / "invalid").glob("*.json"))
O2W = "orchestrator_to_worker"
W2O = "worker_to_orchestrator"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def frame_of(vector: dict[str, Any]) -> bytes:
    if "raw" in vector:
        assert "raw_hex" not in vector
        return vector["raw"].encode("utf-8")
    return bytes.fromhex(vector["raw_hex"])


def test_the_vectors_are_there() -> None:
    assert len(VALID) >= 40, VECTORS_DIR
    assert len(INVALID) >= 100, VECTORS_DIR
    directions = {load(path)["direction"] for path in VALID + INVALID}
    assert directions == {O2W, W2O}


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.stem)
def test_valid_vector_decodes_and_reencodes_to_its_canonical_form(path: Path) -> None:
    vector = load(path)
    for spelling in (
        json.dumps(vector["message"]),
        json.dumps(vector["message"], indent=2, ensure_ascii=False),
    ):
        message = decode_message(spelling.encode("utf-8"), vector["direction"])
        assert message.MESSAGE_TYPE == vector["message"]["message_type"]
        encoded = encode(message)
        expected = vector.get("canonical", vector["message"])
        assert json_equal(json.loads(encoded), expected), encoded[:400]
        # Compact, and the canonical form re-decodes to the same message.
        assert b"\n" not in encoded
        assert encode(decode_message(encoded, vector["direction"])) == encoded


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.stem)
def test_valid_vector_matches_the_schemas(path: Path) -> None:
    vector = load(path)
    assert_matches_schema(vector["message"])
    if "canonical" in vector:
        assert_matches_schema(vector["canonical"])


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_invalid_vector_is_rejected_with_its_code_and_detail(path: Path) -> None:
    vector = load(path)
    limits = Limits(**vector.get("limits", {}))
    with pytest.raises(ProtocolError) as rejected:
        decode_message(frame_of(vector), vector["direction"], limits)
    error = rejected.value
    assert error.code == vector["expected_error"], error.message
    assert vector["expected_detail"] in error.message, error.message
    assert error.code in codes.ALL_CODES


def test_orchestrator_to_worker_vectors_cover_every_kind_the_worker_decodes() -> None:
    kinds = {
        load(path)["message"]["message_type"] for path in VALID if load(path)["direction"] == O2W
    }
    assert kinds == {
        "welcome",
        "hello_rejected",
        "heartbeat",
        "step_batch",
        "result_ack",
        "cancel_steps",
        "health_request",
        "error",
    }
    rejected = [path for path in INVALID if load(path)["direction"] == O2W]
    assert len(rejected) >= 20
