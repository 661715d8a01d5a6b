"""The HTTP client against a stub of the orchestrator's API (a stdlib http.server on a loopback
port). The real API is tested by its own crate; this checks what the client sends and how it
reads the answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tasker_worker import TaskerApiError, TaskerClient


class StubApi:
    """Records requests; answers from ``routes`` (method, path) -> (status, body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                stub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(raw) if raw else None,
                    }
                )
                status, body = stub.routes.get(
                    (self.command, self.path), (404, {"error": {"message": "no such route"}})
                )
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[StubApi]:
    stub = StubApi()
    yield stub
    stub.close()


CONTEXT = {
    "order_id": 42,
    "customer": {"email": "ada@example.com"},
    "items": [{"sku": "A", "quantity": 1}],
}


def test_initialize_task_posts_the_request_and_returns_the_task_id(api: StubApi) -> None:
    api.routes[("POST", "/v1/tasks")] = (201, {"task_id": 6591})
    client = TaskerClient(api.url + "/", headers={"Authorization": "Bearer t"})
    task_id = client.initialize_task(
        "order_fulfillment",
        "order_fulfillment",
        CONTEXT,
        version="1.0.0",
        idempotency_key="order-42",
        initiator="checkout",
        source_system="web",
        reason="new order",
        tags=["vip"],
    )
    assert task_id == 6591
    [request] = api.requests
    assert request["method"] == "POST" and request["path"] == "/v1/tasks"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"] == "Bearer t"
    assert request["body"] == {
        "namespace": "order_fulfillment",
        "name": "order_fulfillment",
        "context": CONTEXT,
        "version": "1.0.0",
        "idempotency_key": "order-42",
        "initiator": "checkout",
        "source_system": "web",
        "reason": "new order",
        "tags": ["vip"],
    }


def test_optional_fields_not_given_are_not_sent(api: StubApi) -> None:
    api.routes[("POST", "/v1/tasks")] = (200, {"task_id": "existing"})
    assert TaskerClient(api.url).initialize_task("ns", "name", {}) == "existing"
    assert api.requests[0]["body"] == {"namespace": "ns", "name": "name", "context": {}}


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            422,
            {
                "error": {
                    "code": "invalid_context",
                    "message": "/customer/email: is required but missing",
                }
            },
            "/customer/email: is required but missing",
        ),
        (
            404,
            {"message": "no template order_fulfillment/nope"},
            "no template order_fulfillment/nope",
        ),
        (400, {"error": "bad JSON"}, "bad JSON"),
        (500, b"internal trouble", "internal trouble"),
    ],
)
def test_refusals_raise_tasker_api_error_with_the_servers_message(
    api: StubApi, status: int, body: Any, message: str
) -> None:
    api.routes[("POST", "/v1/tasks")] = (status, body)
    with pytest.raises(TaskerApiError) as refused:
        TaskerClient(api.url).initialize_task("order_fulfillment", "nope", {})
    assert refused.value.status == status
    assert refused.value.message == message
    assert message in str(refused.value)
    assert refused.value.code == ("invalid_context" if status == 422 else None)


def test_the_apis_error_details_are_kept_and_shown(api: StubApi) -> None:
    details = [
        {"pointer": "/context/customer/email", "message": "is required but missing"},
        {"pointer": "/context/items", "message": "[] has fewer than 1 item"},
    ]
    body = {"error": {"code": "invalid_context", "message": "2 violations", "details": details}}
    api.routes[("POST", "/v1/tasks")] = (422, body)
    with pytest.raises(TaskerApiError) as refused:
        TaskerClient(api.url).initialize_task("order_fulfillment", "order_fulfillment", {})
    assert refused.value.details == details
    assert str(refused.value) == (
        "HTTP 422: 2 violations (/context/customer/email: is required but missing; "
        "/context/items: [] has fewer than 1 item)"
    )


def test_an_answer_without_task_id_is_an_error(api: StubApi) -> None:
    api.routes[("POST", "/v1/tasks")] = (201, {"id": 1})
    with pytest.raises(TaskerApiError, match="no task_id"):
        TaskerClient(api.url).initialize_task("ns", "name", {})


def test_get_task_reads_the_task(api: StubApi) -> None:
    task = {
        "task_id": 7,
        "status": "complete",
        "steps": [{"name": "validate_order", "status": "complete"}],
    }
    api.routes[("GET", "/v1/tasks/7")] = (200, task)
    assert TaskerClient(api.url).get_task(7) == task
    with pytest.raises(TaskerApiError) as missing:
        TaskerClient(api.url).get_task(8)
    assert missing.value.status == 404 and missing.value.message == "no such route"


def test_an_unreachable_server_is_a_tasker_api_error_without_status() -> None:
    stub = StubApi()
    url = stub.url
    stub.close()
    with pytest.raises(TaskerApiError) as unreachable:
        TaskerClient(url, timeout=2).get_task(1)
    assert unreachable.value.status is None
    assert "cannot reach" in unreachable.value.message


def test_the_base_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        TaskerClient("127.0.0.1:8080")
