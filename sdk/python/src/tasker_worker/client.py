"""A small client for the orchestrator's HTTP API (standard library only).

::

    client = TaskerClient("http://127.0.0.1:8080")
    task_id = client.initialize_task(
        "order_fulfillment", "order_fulfillment",
        {"order_id": 42, "customer": {"email": "ada@example.com"}, "items": [...]},
        idempotency_key="order-42",
    )
    print(client.get_task(task_id)["state"])   # pending, in_progress, complete, error, ...

Endpoints used: ``POST /v1/tasks`` (answers ``201`` with ``{"task_id": ...}``; a request with
an idempotency key already used answers with the existing task's id) and
``GET /v1/tasks/{id}``. Every answer that is not a 2xx raises :class:`TaskerApiError` carrying
the HTTP status, the API's error code and message, and its per-field details.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_TIMEOUT = 10.0


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


class TaskerClient:
    """A client of one orchestrator's HTTP API, e.g. ``TaskerClient("http://127.0.0.1:8080")``.

    ``timeout`` is in seconds per request; ``headers`` are added to every request (for example an
    ``Authorization`` header).
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
        path = f"/v1/tasks/{urllib.parse.quote(str(task_id), safe='')}"
        body = self._request("GET", path, None)
        if not isinstance(body, dict):
            raise TaskerApiError(f"the answer to GET {path} is not a JSON object: {body!r}")
        return body

    def _request(self, method: str, path: str, payload: Any) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _parse_body(response.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            body = _parse_body(raw, strict=False)
            raise TaskerApiError(_error_message(body, raw, error), error.code, body) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TaskerApiError(f"cannot reach {self.base_url}: {reason}") from None


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


def _error_message(body: Any, raw: bytes, error: urllib.error.HTTPError) -> str:
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
    return text[:1000] if text else str(error.reason)
