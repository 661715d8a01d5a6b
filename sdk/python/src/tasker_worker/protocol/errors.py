"""Why a frame was rejected: :class:`ProtocolError` and the stable error codes of protocol v1.

The codes are the ones of spec §6.2 and the test vectors' ``expected_error``. The human-readable
messages follow the wording of the Rust crate ``tasker-protocol`` (only the code and the field
path or reason named in the message are normative).
"""

from __future__ import annotations

# Codes raised by decoding a frame.
FRAME_TOO_LARGE = "frame_too_large"
MULTIPART_MESSAGE = "multipart_message"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD_TYPE = "invalid_field_type"
INVALID_FIELD_VALUE = "invalid_field_value"
LIMIT_EXCEEDED = "limit_exceeded"
INCONSISTENT_MESSAGE = "inconsistent_message"
UNSUPPORTED_PROTOCOL_VERSION = "unsupported_protocol_version"
UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
# Codes raised by session logic; they only travel in ``error`` messages.
NOT_REGISTERED = "not_registered"
WORKER_ID_MISMATCH = "worker_id_mismatch"
CAPACITY_EXCEEDED = "capacity_exceeded"

#: Every code protocol v1 defines. Receivers accept codes not listed here (they come from newer
#: peers) and treat them as generic errors.
ALL_CODES = (
    FRAME_TOO_LARGE,
    MULTIPART_MESSAGE,
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD_TYPE,
    INVALID_FIELD_VALUE,
    LIMIT_EXCEEDED,
    INCONSISTENT_MESSAGE,
    UNSUPPORTED_PROTOCOL_VERSION,
    UNKNOWN_MESSAGE_TYPE,
    NOT_REGISTERED,
    WORKER_ID_MISMATCH,
    CAPACITY_EXCEEDED,
)

# Codes of ``hello_rejected`` (an open set; these are v1's).
HELLO_REJECTED_UNSUPPORTED_VERSION = "unsupported_protocol_version"
HELLO_REJECTED_INVALID_HELLO = "invalid_hello"
HELLO_REJECTED_NOT_ACCEPTING_WORKERS = "not_accepting_workers"


class ProtocolError(Exception):
    """A received frame was rejected.

    ``code`` is one of the stable codes above; ``field`` is the path of the offending field
    (``steps[0].metadata.attempt``) for errors about one field, else ``None``; ``str(error)`` is
    the human-readable message naming the field or the reason.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"ProtocolError(code={self.code!r}, message={self.message!r})"

    # Constructors, one per kind of violation, worded like the Rust crate.

    @classmethod
    def frame_too_large(cls, size: int, maximum: int) -> ProtocolError:
        return cls(FRAME_TOO_LARGE, f"frame of {size} bytes exceeds max_frame_bytes {maximum}")

    @classmethod
    def multipart(cls, frames: int) -> ProtocolError:
        return cls(
            MULTIPART_MESSAGE,
            f"message has {frames} frames; a message must be exactly one frame holding a JSON "
            "object",
        )

    @classmethod
    def invalid_json(cls, reason: str) -> ProtocolError:
        return cls(INVALID_JSON, f"frame is not valid JSON: {reason}")

    @classmethod
    def nesting_too_deep(cls, maximum: int) -> ProtocolError:
        return cls(LIMIT_EXCEEDED, f"message nesting depth exceeds the maximum of {maximum} levels")

    @classmethod
    def not_an_object(cls, found: str) -> ProtocolError:
        return cls(NOT_AN_OBJECT, f"message must be a JSON object, found {found}")

    @classmethod
    def missing_field(cls, field: str) -> ProtocolError:
        return cls(MISSING_FIELD, f"missing required field `{field}`", field)

    @classmethod
    def invalid_field_type(cls, field: str, expected: str, found: str) -> ProtocolError:
        return cls(INVALID_FIELD_TYPE, f"field `{field}` must be {expected}, found {found}", field)

    @classmethod
    def invalid_field_value(cls, field: str, reason: str) -> ProtocolError:
        return cls(INVALID_FIELD_VALUE, f"field `{field}` has an invalid value: {reason}", field)

    @classmethod
    def limit_exceeded(cls, field: str, reason: str) -> ProtocolError:
        return cls(LIMIT_EXCEEDED, f"field `{field}` exceeds a protocol limit: {reason}", field)

    @classmethod
    def inconsistent(cls, field: str, reason: str) -> ProtocolError:
        return cls(INCONSISTENT_MESSAGE, f"inconsistent message: field `{field}` {reason}", field)

    @classmethod
    def unsupported_version(cls, received: str, supported: str, major: int) -> ProtocolError:
        return cls(
            UNSUPPORTED_PROTOCOL_VERSION,
            f'unsupported protocol_version "{received}": this peer speaks protocol {supported} '
            f"and accepts only major version {major}",
        )

    @classmethod
    def unknown_message_type(cls, message_type: str, direction: str) -> ProtocolError:
        return cls(
            UNKNOWN_MESSAGE_TYPE,
            f'unknown message_type "{message_type}" for {direction} messages',
        )
