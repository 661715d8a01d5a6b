"""A scripted orchestrator for worker tests: a real ZeroMQ ROUTER bound on a loopback port that
speaks protocol v1 as the test tells it to.

Every frame a worker sends is checked on arrival: exactly ``[identity, payload]``, accepted by
the protocol's worker-to-orchestrator decoder (itself checked against the vectors), and valid
against ``docs/protocol/schema``. Waiting is done by polling the ROUTER with a timeout that only
guards against a hang; no test sleeps and hopes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from conftest import assert_matches_schema

from tasker_worker.protocol import decode_worker_message

GUARD = 10.0  # seconds: how long a test waits for something that should happen at once


@dataclass
class Received:
    """One message from a worker."""

    identity: bytes
    frame: bytes
    message: dict[str, Any]
    decoded: Any
    at: float

    @property
    def type(self) -> str:
        return self.message["message_type"]

    def __getitem__(self, key: str) -> Any:
        return self.message[key]


def new_batch_id() -> str:
    return str(uuid.uuid4())


def step_request(
    step_id: int,
    handler_class: str = "tasker.test",
    *,
    task_id: int = 1,
    step_name: str | None = None,
    handler_config: dict[str, Any] | None = None,
    task_context: dict[str, Any] | None = None,
    previous_results: dict[str, Any] | None = None,
    attempt: int = 1,
    retry_limit: int = 3,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    return {
        "step_id": step_id,
        "task_id": task_id,
        "step_name": step_name or f"step_{step_id}",
        "handler_class": handler_class,
        "handler_config": handler_config or {},
        "task_context": task_context or {},
        "previous_results": previous_results or {},
        "metadata": {
            "attempt": attempt,
            "retry_limit": retry_limit,
            "timeout_ms": timeout_ms,
            "idempotency_key": f"{step_id}:{attempt}",
        },
    }


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ScriptedOrchestrator:
    """The ROUTER side of a worker test."""

    def __init__(
        self, *, auto_heartbeat: bool = True, orchestrator_id: str = "test-orchestrator"
    ) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.orchestrator_id = orchestrator_id
        #: Answer every worker heartbeat with an orchestrator heartbeat (keeps the worker's
        #: liveness fresh, as a real orchestrator's heartbeats would).
        self.auto_heartbeat = auto_heartbeat
        self.log: list[Received] = []

    def close(self) -> None:
        self.router.close(linger=0)
        self.context.term()

    # ----- receiving -----

    def recv(self, timeout: float = GUARD) -> Received | None:
        """The next message from any worker, or ``None`` after ``timeout`` seconds."""
        if not self.router.poll(timeout * 1000, zmq.POLLIN):
            return None
        frames = self.router.recv_multipart()
        assert len(frames) == 2, f"a worker sent {len(frames) - 1} payload frames: {frames!r}"
        identity, frame = frames
        message = json.loads(frame)
        decoded = decode_worker_message(frame)  # raises ProtocolError if the worker broke the spec
        assert_matches_schema(message)
        received = Received(identity, frame, message, decoded, time.monotonic())
        self.log.append(received)
        if self.auto_heartbeat and received.type == "heartbeat":
            self.heartbeat(identity)
        return received

    def expect(
        self,
        message_type: str,
        *,
        timeout: float = GUARD,
        ignore: tuple[str, ...] = ("heartbeat",),
        where: Callable[[Received], bool] | None = None,
    ) -> Received:
        """Waits for a message of ``message_type`` (and matching ``where``), skipping message
        types in ``ignore``; any other message fails the test."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            received = self.recv(max(left, 0)) if left > 0 else None
            if received is None:
                raise AssertionError(f"no {message_type} within {timeout} s; got {self.types()}")
            if received.type == message_type and (where is None or where(received)):
                return received
            if received.type not in ignore:
                raise AssertionError(f"expected {message_type}, got {received.message}")

    def expect_nothing_but(
        self, allowed: tuple[str, ...], *, heartbeats: int, timeout: float = GUARD
    ) -> list[Received]:
        """Receives until ``heartbeats`` worker heartbeats have arrived, failing on any message
        whose type is not in ``allowed`` (heartbeats are always allowed). Worker heartbeats come
        from the worker's loop, so this waits for that many loop turns, not for a guessed time."""
        seen: list[Received] = []
        counted = 0
        deadline = time.monotonic() + timeout
        while counted < heartbeats:
            left = deadline - time.monotonic()
            received = self.recv(left) if left > 0 else None
            if received is None:
                raise AssertionError(f"only {counted} heartbeats within {timeout} s")
            if received.type == "heartbeat":
                counted += 1
            elif received.type not in allowed:
                raise AssertionError(f"unexpected {received.message}")
            seen.append(received)
        return seen

    def types(self) -> list[str]:
        return [received.type for received in self.log]

    # ----- sending -----

    def send(self, identity: bytes, message: dict[str, Any] | bytes | list[bytes]) -> None:
        if isinstance(message, dict):
            self.router.send_multipart([identity, json.dumps(message).encode("utf-8")])
        elif isinstance(message, bytes):
            self.router.send_multipart([identity, message])
        else:
            self.router.send_multipart([identity, *message])

    def envelope(self, message_type: str, **fields: Any) -> dict[str, Any]:
        return {"message_type": message_type, "protocol_version": "1.0", **fields}

    def welcome(
        self,
        identity: bytes,
        worker_id: str,
        *,
        heartbeat_interval_ms: int = 100,
        liveness: int = 20,
        max_frame_bytes: int = 1048576,
        max_steps_per_batch: int = 100,
    ) -> None:
        self.send(
            identity,
            self.envelope(
                "welcome",
                worker_id=worker_id,
                orchestrator_id=self.orchestrator_id,
                heartbeat_interval_ms=heartbeat_interval_ms,
                liveness=liveness,
                max_frame_bytes=max_frame_bytes,
                max_steps_per_batch=max_steps_per_batch,
            ),
        )

    def handshake(self, **welcome: Any) -> tuple[bytes, Received]:
        """Waits for ``hello`` and answers ``welcome``; returns the identity and the hello."""
        hello = self.expect("hello")
        self.welcome(hello.identity, hello["worker_id"], **welcome)
        return hello.identity, hello

    def heartbeat(self, identity: bytes) -> None:
        self.send(
            identity,
            self.envelope("heartbeat", orchestrator_id=self.orchestrator_id, timestamp=now_text()),
        )

    def step_batch(
        self, identity: bytes, steps: list[dict[str, Any]], batch_id: str | None = None
    ) -> str:
        batch_id = batch_id or new_batch_id()
        self.send(identity, self.envelope("step_batch", batch_id=batch_id, steps=steps))
        return batch_id

    def ack(self, identity: bytes, *results: Received, outcome: str = "applied") -> None:
        acks = []
        for result in results:
            kind = result.type
            acks.append(
                {
                    "batch_id": result["batch_id"],
                    "message_kind": kind,
                    "step_id": result["step_id"] if kind == "partial_result" else None,
                    "outcome": outcome,
                }
            )
        self.send(identity, self.envelope("result_ack", acks=acks))

    def cancel(
        self, identity: bytes, batch_id: str, step_ids: list[int], reason: str = "step_cancelled"
    ) -> None:
        self.send(
            identity,
            self.envelope("cancel_steps", batch_id=batch_id, step_ids=step_ids, reason=reason),
        )


class WorkerThread:
    """Runs a :class:`tasker_worker.Worker` on a thread, keeping what :meth:`run` raised."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="worker-under-test", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            self.error = error

    def join(self, timeout: float = GUARD) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"

    def stop(self, timeout: float = GUARD) -> None:
        self.worker.request_shutdown("test over")
        self.join(timeout)
