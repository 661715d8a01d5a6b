"""Results the worker has produced and the orchestrator has not yet acknowledged (spec §9.3),
in the order they were produced, ready to be sent again after a reconnect."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .protocol import ResultKey, StepRef


@dataclass
class HeldResult:
    """One held result: its encoded frame (re-sent byte for byte, so a re-sent partial result
    keeps its ``sequence``) and when it was last handed to the socket on this session."""

    frame: bytes
    last_sent: float | None = None
    ever_sent: bool = False


class Outbox:
    """Held results by key, oldest first."""

    def __init__(self) -> None:
        self._held: OrderedDict[ResultKey, HeldResult] = OrderedDict()
        self._per_batch: dict[str, int] = {}

    def hold(self, key: ResultKey, frame: bytes) -> HeldResult:
        """Holds ``frame`` under ``key`` (replacing an older frame with that key)."""
        self.release(key)
        held = HeldResult(frame)
        self._held[key] = held
        self._per_batch[key.batch_id] = self._per_batch.get(key.batch_id, 0) + 1
        return held

    def release(self, key: ResultKey) -> bool:
        """Drops the result held under ``key``; whether there was one."""
        if self._held.pop(key, None) is None:
            return False
        remaining = self._per_batch[key.batch_id] - 1
        if remaining:
            self._per_batch[key.batch_id] = remaining
        else:
            del self._per_batch[key.batch_id]
        return True

    def get(self, key: ResultKey) -> HeldResult | None:
        return self._held.get(key)

    def holds_batch(self, batch_id: str) -> bool:
        """Whether any result of ``batch_id`` is held."""
        return batch_id in self._per_batch

    def held_steps(self) -> list[StepRef]:
        """The steps whose final ``partial_result`` is held."""
        return [
            StepRef(key.batch_id, key.step_id)
            for key in self._held
            if key.kind == "partial_result" and key.step_id is not None
        ]

    def mark_all_unsent(self) -> None:
        """Forgets every send: after the next ``welcome`` every held result goes out again."""
        for held in self._held.values():
            held.last_sent = None

    def due(self, now: float, stale_before: float | None) -> list[tuple[ResultKey, HeldResult]]:
        """Held results to send now, oldest first: those not sent on this session, and those
        last sent before ``stale_before``. Marks them sent at ``now``."""
        due = []
        for key, held in self._held.items():
            if held.last_sent is None or (
                stale_before is not None and held.last_sent < stale_before
            ):
                due.append((key, held))
        for _, held in due:
            held.last_sent = now
        return due

    def keys(self) -> list[ResultKey]:
        return list(self._held)

    def __len__(self) -> int:
        return len(self._held)
