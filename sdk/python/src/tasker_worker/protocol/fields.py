"""Reading typed fields out of a parsed JSON object, reporting the first violation with the
field's path (``steps[0].metadata.attempt``) and the protocol's error code.

The checks for one field run in the spec's order (§6.1): presence, JSON type, size limit, value
rules. Written to behave exactly like the Rust crate's ``fields.rs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from .errors import ProtocolError
from .limits import (
    I64_MAX,
    I64_MIN,
    MAX_BACKTRACE_ENTRY_BYTES,
    MAX_CODE_BYTES,
    MAX_IDENTIFIER_BYTES,
    MAX_NAME_BYTES,
    MAX_TEXT_BYTES,
    U64_MAX,
    truncate_to_bytes,
)
from .messages import StepRef
from .timestamps import Timestamp

_IDENTIFIER = re.compile(r"[A-Za-z0-9._:@-]+")
_CODE = re.compile(r"[a-z][a-z0-9_]*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

T = TypeVar("T")


class Text:
    """The kinds of string field (spec §3.5): (maximum bytes, content rule)."""

    IDENTIFIER = "identifier"  # worker_id, orchestrator_id: 1–128 bytes of A-Z a-z 0-9 . _ : @ -
    NAME = "name"  # handler_class, step_name, …: 1–255 bytes
    LABEL = "label"  # offending_message_type, envelope fields: 0–255 bytes
    PROSE = "text"  # message, reason: 0–16384 bytes
    BACKTRACE_ENTRY = "backtrace entry"  # 0–2048 bytes
    CODE = "code"  # 1–64 bytes of [a-z][a-z0-9_]*

    MAX_BYTES = {
        IDENTIFIER: MAX_IDENTIFIER_BYTES,
        NAME: MAX_NAME_BYTES,
        LABEL: MAX_NAME_BYTES,
        PROSE: MAX_TEXT_BYTES,
        BACKTRACE_ENTRY: MAX_BACKTRACE_ENTRY_BYTES,
        CODE: MAX_CODE_BYTES,
    }

    @staticmethod
    def violation(kind: str, text: str) -> str | None:
        """The content rule ``text`` breaks, or ``None``."""
        if kind == Text.IDENTIFIER:
            if not text:
                return "must not be empty"
            if not _IDENTIFIER.fullmatch(text):
                return "may contain only the characters A-Z a-z 0-9 . _ : @ -"
        elif kind == Text.NAME:
            if not text:
                return "must not be empty"
        elif kind == Text.CODE:
            if not _CODE.fullmatch(text):
                return "must match [a-z][a-z0-9_]*"
        return None


def json_type_name(value: Any) -> str:
    """The JSON type of a parsed value as named in error messages (like the Rust crate:
    integers beyond the signed 64-bit range but within u64 are called out, larger ones are
    ``number`` as they would be floats there)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if I64_MIN <= value <= I64_MAX:
            return "integer"
        if I64_MAX < value <= U64_MAX:
            return "integer beyond the signed 64-bit range"
        return "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_canonical_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in lowercase hyphenated form."""
    return _UUID.fullmatch(text) is not None


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class Field:
    """One present field value and its path."""

    __slots__ = ("value", "path")

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def wrong_type(self, expected: str) -> ProtocolError:
        return ProtocolError.invalid_field_type(self.path, expected, json_type_name(self.value))

    def invalid(self, reason: str) -> ProtocolError:
        return ProtocolError.invalid_field_value(self.path, reason)

    def over_limit(self, reason: str) -> ProtocolError:
        return ProtocolError.limit_exceeded(self.path, reason)

    def text(self, kind: str) -> str:
        """A string of the given :class:`Text` kind."""
        value = self.value
        if not isinstance(value, str):
            raise self.wrong_type("a string")
        maximum = Text.MAX_BYTES[kind]
        if len(value) * 4 > maximum:  # only count bytes when it could matter
            length = _utf8_length(value)
            if length > maximum:
                raise self.over_limit(
                    f"{length} bytes of UTF-8, more than the maximum of {maximum}"
                )
        rule = Text.violation(kind, value)
        if rule is not None:
            raise self.invalid(rule)
        return value

    def integer(self, minimum: int, maximum: int) -> int:
        """An integer in ``minimum..=maximum`` (bounds clamped to the signed 64-bit range).
        Non-integers and integers outside the signed 64-bit range are type errors; integers
        outside the bounds are value errors."""
        value = self.value
        if type(value) is not int or not I64_MIN <= value <= I64_MAX:
            raise self.wrong_type("an integer in the signed 64-bit range")
        minimum, maximum = max(minimum, I64_MIN), min(maximum, I64_MAX)
        if not minimum <= value <= maximum:
            raise self.invalid(f"{value} is outside the range {minimum}..={maximum}")
        return value

    def id(self) -> int:
        """A step or task id: an integer ≥ 1."""
        return self.integer(1, I64_MAX)

    def boolean(self) -> bool:
        if type(self.value) is not bool:
            raise self.wrong_type("a boolean")
        return self.value

    def uuid(self) -> str:
        """A UUID in lowercase hyphenated form, returned as given."""
        value = self.value
        if not isinstance(value, str):
            raise self.wrong_type("a string")
        if not is_canonical_uuid(value):
            raise self.invalid(
                f'"{truncate_to_bytes(value, 64)}" is not a UUID in lowercase hyphenated form '
                "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            )
        return value

    def timestamp(self) -> Timestamp:
        value = self.value
        if not isinstance(value, str):
            raise self.wrong_type("a string")
        parsed = Timestamp.parse(value)
        if parsed is None:
            raise self.invalid(
                f'"{truncate_to_bytes(value, 64)}" is not an RFC 3339 timestamp of the form '
                "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)"
            )
        return parsed

    def one_of(self, allowed: tuple[str, ...]) -> str:
        """A value of a closed enumeration."""
        value = self.value
        if not isinstance(value, str):
            raise self.wrong_type("a string")
        if value not in allowed:
            listed = ", ".join(f'"{option}"' for option in allowed)
            raise self.invalid(f'"{truncate_to_bytes(value, 64)}" is not one of {listed}')
        return value

    def object(self) -> Fields:
        """A nested protocol object, read field by field."""
        if not isinstance(self.value, dict):
            raise self.wrong_type("an object")
        return Fields(self.value, self.path)

    def json_object(self) -> dict[str, Any]:
        """An opaque JSON object (user payload), passed on unchanged."""
        if not isinstance(self.value, dict):
            raise self.wrong_type("an object")
        return self.value

    def any(self) -> Any:
        """Any JSON value (user payload)."""
        return self.value

    def array(self, max_items: int | None, non_empty: bool) -> list[Field]:
        """An array with at most ``max_items`` entries (``limit_exceeded`` beyond), non-empty
        if ``non_empty`` (``invalid_field_value`` otherwise)."""
        value = self.value
        if not isinstance(value, list):
            raise self.wrong_type("an array")
        if max_items is not None and len(value) > max_items:
            raise self.over_limit(f"{len(value)} entries, more than the maximum of {max_items}")
        if non_empty and not value:
            raise self.invalid("must not be empty")
        return [Field(item, f"{self.path}[{index}]") for index, item in enumerate(value)]

    def step_ref(self) -> StepRef:
        """A ``{batch_id, step_id}`` reference."""
        fields = self.object()
        return StepRef(
            batch_id=fields.required("batch_id").uuid(),
            step_id=fields.required("step_id").id(),
        )


class Fields:
    """A JSON object being read, with the path prefix of its fields."""

    __slots__ = ("mapping", "prefix")

    def __init__(self, mapping: dict[str, Any], prefix: str = "") -> None:
        self.mapping = mapping
        self.prefix = prefix

    def _path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def required(self, name: str) -> Field:
        """A required field: absent is ``missing_field``; ``null`` fails the type check that
        follows."""
        if name not in self.mapping:
            raise ProtocolError.missing_field(self._path(name))
        return Field(self.mapping[name], self._path(name))

    def optional(self, name: str) -> Field | None:
        """An optional field: absent and ``null`` both mean "not given"."""
        value = self.mapping.get(name)
        if value is None:
            return None
        return Field(value, self._path(name))


def distinct(
    items: list[Field],
    read: Callable[[Field], T],
    key: Callable[[T], Hashable],
    duplicate_path: Callable[[Field], str],
) -> list[T]:
    """Reads each entry with ``read``, rejecting an entry equal (by ``key``) to an earlier one
    with ``invalid_field_value`` at the path ``duplicate_path`` gives for it."""
    values: list[T] = []
    first_index: dict[Hashable, int] = {}
    for item in items:
        value = read(item)
        item_key = key(value)
        if item_key in first_index:
            raise ProtocolError.invalid_field_value(
                duplicate_path(item), f"duplicates entry [{first_index[item_key]}]"
            )
        first_index[item_key] = len(values)
        values.append(value)
    return values
