"""Shared test helpers: where the protocol lives, strict JSON comparison, schema validation."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

SDK_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = SDK_DIR.parent.parent
PROTOCOL_DIR = REPO_DIR / "docs" / "protocol"
VECTORS_DIR = PROTOCOL_DIR / "vectors"
SCHEMA_DIR = PROTOCOL_DIR / "schema"


def json_equal(left: Any, right: Any) -> bool:
    """Equality of two parsed JSON values that, unlike ``==``, tells ``1`` from ``1.0`` and
    ``true`` from ``1``."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    return left == right


@cache
def _validator(name: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def schema_errors(message: dict[str, Any]) -> list[str]:
    """Why ``message`` fails ``envelope.json`` or ``<message_type>.json`` (empty if it
    passes)."""
    problems = [
        f"envelope: {error.message}" for error in _validator("envelope").iter_errors(message)
    ]
    message_type = message.get("message_type")
    if isinstance(message_type, str) and (SCHEMA_DIR / f"{message_type}.json").is_file():
        problems += [
            f"{message_type}: {error.message}"
            for error in _validator(message_type).iter_errors(message)
        ]
    else:
        problems.append(f"no schema for message_type {message_type!r}")
    return problems


def assert_matches_schema(message: dict[str, Any]) -> None:
    problems = schema_errors(message)
    assert not problems, f"{json.dumps(message)[:500]} breaks the schema: {problems}"


@pytest.fixture(scope="session")
def protocol_dir() -> Path:
    assert PROTOCOL_DIR.is_dir(), f"protocol directory not found at {PROTOCOL_DIR}"
    return PROTOCOL_DIR


def pytest_report_header(config: Any) -> str:
    return f"tasker protocol: {PROTOCOL_DIR} (exists: {os.path.isdir(PROTOCOL_DIR)})"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A banner when the end-to-end tests were skipped (no ``tasker`` binary), so a green run
    without them cannot be mistaken for a full one."""
    reasons = set()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if "end-to-end:" in reason:
            reasons.add(reason.split("end-to-end:", 1)[1].strip())
    if reasons:
        banner = "#" * 78
        terminalreporter.write_line(banner, yellow=True, bold=True)
        for reason in sorted(reasons):
            terminalreporter.write_line(
                f"END-TO-END TESTS SKIPPED: {reason}", yellow=True, bold=True
            )
        terminalreporter.write_line(banner, yellow=True, bold=True)
