"""A small client for the orchestrator's HTTP API (standard library only).

::

    client = TaskerClient("http://127.0.0.1:8080")
    task_id = client.initialize_task(
        "order_fulfillment", "order_fulfillment",
        {"order_id": 42, "customer": {"email": "ada@example.com"}, "items": [...]},
        idempotency_key="order-42",
    )
    print(client.get_task(task_id)["state"])   # pending, in_progress, complete, error, ...
    task = client.wait_task(task_id, timeout=60)          # the task once it has finished
    task = client.create_and_wait("examples", "diamond", {}, timeout=60)

Endpoints used: ``POST /v1/tasks`` (answers ``201`` with ``{"task_id": ...}``; a request with
an idempotency key already used answers with the existing task's id), ``GET /v1/tasks/{id}``
and its long poll ``GET /v1/tasks/{id}?wait_ms=N`` (the server answers once the task has
finished or ``N`` ms passed). Every answer that is not a 2xx raises :class:`TaskerApiError`
carrying the HTTP status, the API's error code and message, and its per-field details;
:meth:`TaskerClient.wait_task` raises :class:`TaskerWaitTimeout` when its ``timeout`` passes.

Connections are kept alive and reused (``http.client``; environment proxy settings are not
used). A client is thread-safe: it keeps a small pool of idle connections guarded by a lock,
and each request borrows one connection (or opens a new one) for its duration, so requests
from several threads — a long poll among them — never wait for each other.
"""

from __future__ import annotations

import http.client
import json
import math
import select
import socket
import threading
import time
import urllib.parse
from typing import Any

from . import __version__

DEFAULT_TIMEOUT = 10.0
#: The longest wait asked of the server in one long poll, in milliseconds (it accepts up to
#: 60 000; a longer wait is several polls).
LONG_POLL_MS = 30_000
#: Least time between the starts of two polls of one wait, in seconds: with a server that
#: answers at once instead of holding the request, a wait still makes at most 5 requests a
#: second.
MIN_POLL_INTERVAL = 0.2
#: A task in one of these states has finished: :meth:`TaskerClient.wait_task` returns it.
FINISHED_STATES = frozenset({"complete", "error", "cancelled", "resolved_manually"})
#: Idle kept-alive connections a client keeps at most (more are closed when returned).
MAX_IDLE_CONNECTIONS = 8
USER_AGENT = f"tasker-worker-python/{__version__}"


class TaskerApiError(Exception):
    """The API refused a request (``status`` is the HTTP status, ``code`` the API's stable
    error code such as ``unknown_template`` or ``invalid_context`` when the body has one,
    ``message`` the server's explanation, ``body`` the parsed JSON body if any), or could not be
    reached (``status`` and ``code`` are ``None``)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        self.message = message
        self.status = status
        self.body = body
        self.code = _error_code(body)
        #: The API's ``details``: one ``{"pointer", "message"}`` per problem (a field of the
        #: request, a place in the context that fails the template's schema).
        self.details = _error_details(body)
        text = f"HTTP {status}: {message}" if status is not None else message
        if self.details:
            text += " (" + "; ".join(_describe_detail(detail) for detail in self.details) + ")"
        super().__init__(text)


class TaskerWaitTimeout(TaskerApiError):
    """:meth:`TaskerClient.wait_task` (or :meth:`~TaskerClient.create_and_wait`) gave up: the
    task had not finished when ``timeout`` seconds had passed. ``task_id`` is the task (it keeps
    running: wait again to see it finish), ``state`` its last seen state (``pending``,
    ``in_progress``, ...), ``task`` the last answer of ``GET /v1/tasks/{id}``. ``status`` and
    ``code`` are ``None``: the server refused nothing."""

    def __init__(self, task_id: Any, timeout: float, task: dict[str, Any]) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.task = task
        self.state: str | None = task.get("state")
        super().__init__(
            f"task {task_id} did not finish within {timeout:g} s (last seen state: {self.state})"
        )


class TaskerClient:
    """A client of one orchestrator's HTTP API, e.g. ``TaskerClient("http://127.0.0.1:8080")``.

    ``timeout`` is in seconds per request (a long poll of :meth:`wait_task` gets its wait on
    top of it); ``headers`` are added to every request (for example an ``Authorization``
    header).

    Thread-safe; connections are kept alive and reused (a pool of at most
    :data:`MAX_IDLE_CONNECTIONS` idle ones, guarded by a lock; each request borrows one for its
    duration). :meth:`close` (or ``with TaskerClient(...) as client:``) closes the idle ones;
    the client stays usable.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        parts = urllib.parse.urlsplit(self.base_url)
        if not parts.hostname:
            raise ValueError(f"base_url has no host: {base_url!r}")
        self._connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._host = parts.hostname
        self._port = parts.port  # raises ValueError for a port that is not a number
        self._path_prefix = parts.path
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def initialize_task(
        self,
        namespace: str,
        name: str,
        context: dict[str, Any],
        version: str | None = None,
        idempotency_key: str | None = None,
        initiator: str | None = None,
        source_system: str | None = None,
        reason: str | None = None,
        tags: list[str] | None = None,
    ) -> Any:
        """Creates a task from the template ``namespace``/``name`` (latest version unless
        ``version``) with ``context``; returns the new task's id (or, for an
        ``idempotency_key`` already used, the existing task's). Raises :class:`TaskerApiError`
        on a 4xx/5xx answer, e.g. for an unknown template or a context that fails the
        template's schema."""
        request: dict[str, Any] = {"namespace": namespace, "name": name, "context": context}
        optional = {
            "version": version,
            "idempotency_key": idempotency_key,
            "initiator": initiator,
            "source_system": source_system,
            "reason": reason,
            "tags": tags,
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        body = self._request("POST", "/v1/tasks", request)
        if not isinstance(body, dict) or "task_id" not in body:
            raise TaskerApiError(f"the answer to POST /v1/tasks has no task_id: {body!r}")
        return body["task_id"]

    def get_task(self, task_id: Any) -> dict[str, Any]:
        """The task ``task_id`` as the API describes it: ``state`` (``pending``,
        ``in_progress``, ``complete``, ``error``, ``cancelled``, ``resolved_manually``),
        ``context``, ``step_counts`` and ``steps`` (each with ``name``, ``state``,
        ``attempts``, ``depends_on``, ``results`` — the step's output — and ``last_error``).
        Raises :class:`TaskerApiError` (status 404, code ``task_not_found``) for an unknown
        task."""
        return self._get_task(task_id, None)

    def wait_task(self, task_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """Waits until the task ``task_id`` has finished (state ``complete``, ``error``,
        ``cancelled`` or ``resolved_manually``) and returns it as :meth:`get_task` does.

        Long polls ``GET /v1/tasks/{id}?wait_ms=N`` (``N`` at most :data:`LONG_POLL_MS`, and
        never beyond the deadline), as many times as needed: the server answers as soon as the
        task finishes. ``timeout`` (seconds) bounds the wait: when it passes first,
        :class:`TaskerWaitTimeout` is raised with the task's last seen state (the task itself
        runs on). ``None`` waits as long as it takes; ``0`` looks once. Whatever the timeout,
        the task is read at least once. A refused request (an unknown task: 404
        ``task_not_found``) or an unreachable server raises :class:`TaskerApiError` at once."""
        deadline = _deadline(timeout)
        return self._wait(task_id, deadline, timeout)

    def create_and_wait(
        self,
        namespace: str,
        name: str,
        context: dict[str, Any],
        version: str | None = None,
        idempotency_key: str | None = None,
        initiator: str | None = None,
        source_system: str | None = None,
        reason: str | None = None,
        tags: list[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Creates a task as :meth:`initialize_task` does (same arguments) and waits for it as
        :meth:`wait_task` does; returns the finished task. ``timeout`` (seconds, ``None``: no
        limit) counts from this call, creation included; when it passes first,
        :class:`TaskerWaitTimeout` is raised, whose ``task_id`` names the task created."""
        deadline = _deadline(timeout)
        task_id = self.initialize_task(
            namespace,
            name,
            context,
            version=version,
            idempotency_key=idempotency_key,
            initiator=initiator,
            source_system=source_system,
            reason=reason,
            tags=tags,
        )
        return self._wait(task_id, deadline, timeout)

    def close(self) -> None:
        """Closes the idle kept-alive connections. The client stays usable (a later request
        opens a new connection)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> TaskerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- waiting ----------------------------------------------------------------------------

    def _wait(self, task_id: Any, deadline: float | None, timeout: float | None) -> dict[str, Any]:
        while True:
            started = time.monotonic()
            left_ms = LONG_POLL_MS if deadline is None else (deadline - started) * 1000
            wait_ms = LONG_POLL_MS if left_ms >= LONG_POLL_MS else max(0, math.ceil(left_ms))
            task = self._get_task(task_id, wait_ms)
            if task.get("state") in FINISHED_STATES:
                return task
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                assert timeout is not None
                raise TaskerWaitTimeout(task_id, timeout, task)
            # A server that holds the request answers no sooner than wait_ms: this pause is
            # then zero. One that answers at once is not polled in a tight loop.
            pause = started + MIN_POLL_INTERVAL - now
            if deadline is not None:
                pause = min(pause, deadline - now)
            if pause > 0:
                time.sleep(pause)

    def _get_task(self, task_id: Any, wait_ms: int | None) -> dict[str, Any]:
        """``GET /v1/tasks/{id}``, with ``?wait_ms=`` (and a read timeout that long more) when
        ``wait_ms`` is given."""
        path = f"/v1/tasks/{urllib.parse.quote(str(task_id), safe='')}"
        read_timeout = None
        if wait_ms is not None:
            path += f"?wait_ms={wait_ms}"
            read_timeout = wait_ms / 1000 + self.timeout
        body = self._request("GET", path, None, read_timeout=read_timeout)
        if not isinstance(body, dict):
            raise TaskerApiError(f"the answer to GET {path} is not a JSON object: {body!r}")
        return body

    # -- HTTP -------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, payload: Any, *, read_timeout: float | None = None
    ) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        timeout = self.timeout if read_timeout is None else read_timeout
        status, reason, raw = self._exchange(
            method, self._path_prefix + path, data, headers, timeout
        )
        if 200 <= status < 300:
            return _parse_body(raw)
        body = _parse_body(raw, strict=False)
        raise TaskerApiError(_error_message(body, raw, reason), status, body)

    def _exchange(
        self,
        method: str,
        target: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, str, bytes]:
        """Sends one request on a pooled connection; the status, reason and whole body.

        A kept-alive connection the server has closed in between is noticed before use (its
        socket is readable) and replaced. A request that still fails on a reused connection is
        sent once more on a new one when that cannot run it twice: a ``GET``, or a request the
        failure cut short before it was sent whole. Timeouts are never retried."""
        for attempt in (1, 2):
            connection, reused = self._checkout()
            sent = False
            try:
                if connection.sock is None:
                    connection.timeout = self.timeout  # to connect
                    connection.connect()
                assert connection.sock is not None
                connection.sock.settimeout(timeout)  # to send and to read the answer
                connection.request(method, target, body=data, headers=headers)
                sent = True
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                retry = (
                    attempt == 1
                    and reused
                    and (method == "GET" or not sent)
                    and not isinstance(error, TimeoutError)
                )
                if retry:
                    continue
                reason = "timed out" if isinstance(error, TimeoutError) else error
                raise TaskerApiError(f"cannot reach {self.base_url}: {reason}") from None
            self._checkin(connection)
            return response.status, response.reason, raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (and whether its socket is still open from an earlier request),
        else a new one."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            return self._connection_class(self._host, self._port, timeout=self.timeout), False
        if connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()  # the next request opens a new socket
        return connection, connection.sock is not None

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        if connection.sock is not None:
            with self._lock:
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append(connection)
                    return
        connection.close()


def _deadline(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` at which a wait of ``timeout`` seconds ends (``None``: never)."""
    if timeout is None:
        return None
    if not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    return time.monotonic() + timeout


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle connection's socket is readable: the server closed it (or sent something
    unasked); either way it cannot carry another request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _parse_body(raw: bytes, strict: bool = True) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        if strict:
            raise TaskerApiError(f"the answer is not JSON: {raw[:200]!r}") from None
        return None


def _error_code(body: Any) -> str | None:
    """``code`` of the API's error body ``{"error": {"code": ..., "message": ...}}``."""
    nested = body.get("error") if isinstance(body, dict) else None
    code = nested.get("code") if isinstance(nested, dict) else None
    return code if isinstance(code, str) else None


def _error_details(body: Any) -> list[dict[str, Any]]:
    nested = body.get("error") if isinstance(body, dict) else None
    details = nested.get("details") if isinstance(nested, dict) else None
    if not isinstance(details, list):
        return []
    return [detail for detail in details if isinstance(detail, dict)]


def _describe_detail(detail: dict[str, Any]) -> str:
    pointer = detail.get("pointer")
    message = detail.get("message")
    if isinstance(pointer, str) and pointer:
        return f"{pointer}: {message}"
    return str(message)


def _error_message(body: Any, raw: bytes, reason: str) -> str:
    """The server's explanation: ``{"error": {"message": ...}}``, ``{"error": "..."}``,
    ``{"message": ...}``, else the raw text or the HTTP reason."""
    if isinstance(body, dict):
        nested = body.get("error")
        if isinstance(nested, dict) and isinstance(nested.get("message"), str):
            return nested["message"]
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    text = raw.decode("utf-8", "replace").strip()
    return text[:1000] if text else reason
