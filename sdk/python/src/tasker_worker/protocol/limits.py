"""Size and range limits of protocol v1 (spec §12).

Two limits are set per deployment and announced by the orchestrator in ``welcome``
(:class:`Limits`); the others are fixed so that every implementation rejects the same messages.
Lengths are counted in UTF-8 bytes, never in characters.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = 1

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
MIN_MAX_FRAME_BYTES = 64 * 1024
MAX_MAX_FRAME_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_STEPS_PER_BATCH = 100
MAX_STEPS_PER_BATCH_CEILING = 1000
MAX_NESTING_DEPTH = 64

MAX_IDENTIFIER_BYTES = 128
MAX_NAME_BYTES = 255
MAX_TEXT_BYTES = 16 * 1024
MAX_CODE_BYTES = 64
MAX_BACKTRACE_ENTRIES = 100
MAX_BACKTRACE_ENTRY_BYTES = 2048
MAX_HANDLER_CLASSES = 1000
MAX_CAPACITY = 10_000

MIN_HEARTBEAT_INTERVAL_MS = 100
MAX_HEARTBEAT_INTERVAL_MS = 60_000
DEFAULT_HEARTBEAT_INTERVAL_MS = 1000
DEFAULT_LIVENESS = 5
MAX_LIVENESS = 100

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Limits:
    """The per-session limits a decoder enforces.

    A worker decodes with the defaults until ``welcome`` and with the announced values after.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_steps_per_batch: int = DEFAULT_MAX_STEPS_PER_BATCH


def truncate_to_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` of at most ``max_bytes`` UTF-8 bytes, cut at a character
    boundary. Senders use it to fit free text (error messages, backtraces) into the limits.

    Characters UTF-8 cannot carry (lone surrogates) become ``?``, so the result always encodes.
    """
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    return encoded[:max_bytes].decode("utf-8", "ignore")
