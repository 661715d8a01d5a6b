"""The HTTP client against a stub of the orchestrator's API (a stdlib http.server on a loopback
port). The real API is tested by its own crate; this checks what the client sends and how it
reads the answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tasker_worker import TaskerApiError, TaskerClient, TaskerWaitTimeout
from tasker_worker.client import LONG_POLL_MS, MIN_POLL_INTERVAL

#: What a responder answers: (status, body), or None to close the connection unanswered.
Answer = tuple[int, Any] | None


class StubApi:
    """Records requests; answers with ``responder(request)`` when set, else from ``routes``
    (method, path) -> (status, body).

    ``keep_alive``: speak HTTP/1.1 and keep connections open between requests (else HTTP/1.0,
    one request per connection). ``close_after_answer``: close the connection after each
    answer without saying so (a kept-alive connection the server dropped while it was idle).
    """

    def __init__(self, keep_alive: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.responder: Callable[[dict[str, Any]], Answer] | None = None
        self.close_after_answer = False
        #: Set when the test ends: responders that hold a request stop holding.
        self.closing = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": self.path,
                    "route": url.path,
                    "query": parse_qs(url.query),
                    "headers": dict(self.headers),
                    "body": json.loads(raw) if raw else None,
                    "port": self.client_address[1],
                    "at": time.monotonic(),
                }
                stub.requests.append(request)
                if stub.responder is not None:
                    answer = stub.responder(request)
                else:
                    answer = stub.routes.get(
                        (self.command, self.path), (404, {"error": {"message": "no such route"}})
                    )
                if answer is None:
                    self.close_connection = True
                    return
                status, body = answer
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if stub.close_after_answer:
                    self.close_connection = True

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                with stub.lock:
                    stub.closed_connections += 1

        #: How many connections the server has closed so far.
        self.closed_connections = 0
        self.lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[StubApi]:
    stub = StubApi()
    yield stub
    stub.close()


@pytest.fixture
def keep_alive_api() -> Iterator[StubApi]:
    stub = StubApi(keep_alive=True)
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


# -- wait_task and create_and_wait: the long poll GET /v1/tasks/{id}?wait_ms=N ----------------


def task_view(task_id: int, state: str) -> dict[str, Any]:
    return {"task_id": task_id, "state": state, "steps": [{"name": "a", "state": state}]}


def wait_for_requests(api: StubApi, count: int) -> None:
    """Waits until the stub has received ``count`` requests (at most 10 s)."""
    deadline = time.monotonic() + 10
    while len(api.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(api.requests) >= count, f"the stub did not receive {count} requests"


def wait_until_closed(api: StubApi, count: int) -> None:
    """Waits until the stub has closed ``count`` connections (at most 10 s)."""
    deadline = time.monotonic() + 10
    while api.closed_connections < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.closed_connections >= count, f"the stub did not close {count} connections"


def wait_ms_of(request: dict[str, Any]) -> int:
    [value] = request["query"]["wait_ms"]
    return int(value)


def answer_states(api: StubApi, task_id: int, states: list[str]) -> None:
    """Answers the polls of ``task_id`` at once with ``states`` in turn (the last one again
    when they run out)."""
    remaining = list(states)

    def respond(request: dict[str, Any]) -> Answer:
        if request["route"] != f"/v1/tasks/{task_id}":
            return (404, {"error": {"code": "task_not_found", "message": "no such task"}})
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return (200, task_view(task_id, state))

    api.responder = respond


def hold_like_the_server(api: StubApi, task_id: int, finished: threading.Event) -> None:
    """Answers like the real long poll: holds each request until ``finished`` is set or its
    ``wait_ms`` passed, then answers the task's state at that moment."""

    def respond(request: dict[str, Any]) -> Answer:
        wait = wait_ms_of(request) / 1000 if "wait_ms" in request["query"] else 0
        deadline = time.monotonic() + wait
        while not finished.is_set() and not api.closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished.wait(min(left, 0.05))
        return (200, task_view(task_id, "complete" if finished.is_set() else "in_progress"))

    api.responder = respond


def test_wait_task_polls_with_wait_ms_until_the_task_has_finished(api: StubApi) -> None:
    answer_states(api, 7, ["pending", "in_progress", "complete"])
    task = TaskerClient(api.url).wait_task(7)
    assert task == task_view(7, "complete")
    assert [request["path"] for request in api.requests] == [
        f"/v1/tasks/7?wait_ms={LONG_POLL_MS}"
    ] * 3
    assert LONG_POLL_MS == 30_000
    assert {request["method"] for request in api.requests} == {"GET"}


@pytest.mark.parametrize("state", ["complete", "error", "cancelled", "resolved_manually"])
def test_every_final_state_ends_the_wait(api: StubApi, state: str) -> None:
    answer_states(api, 3, [state])
    assert TaskerClient(api.url).wait_task(3, timeout=5)["state"] == state
    assert len(api.requests) == 1


def test_wait_task_returns_as_soon_as_the_held_poll_answers(api: StubApi) -> None:
    finished = threading.Event()
    hold_like_the_server(api, 7, finished)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(TaskerClient(api.url, timeout=2).wait_task, 7)
        # The poll is held by the server: the client's ordinary 2 s timeout must not cut it.
        wait_for_requests(api, 1)
        assert not waiting.done(), "wait_task returned before the task finished"
        finished.set()
        task = waiting.result(timeout=10)
    assert task["state"] == "complete"
    assert [wait_ms_of(request) for request in api.requests] == [LONG_POLL_MS]


def test_the_long_poll_read_timeout_is_longer_than_its_wait(api: StubApi) -> None:
    finished = threading.Event()
    hold_like_the_server(api, 7, finished)
    client = TaskerClient(api.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(TaskerWaitTimeout) as timed_out:
        client.wait_task(7, timeout=0.8)
    # The server held the poll for about 0.8 s, four times the per-request timeout: the client
    # read its answer instead of giving up after 0.2 s.
    assert time.monotonic() - started >= 0.8
    assert timed_out.value.state == "in_progress"
    assert 700 < wait_ms_of(api.requests[0]) <= 800


def test_an_ordinary_request_keeps_the_per_request_timeout(api: StubApi) -> None:
    released = threading.Event()

    def hold(request: dict[str, Any]) -> Answer:
        released.wait(10)
        return (200, task_view(7, "complete"))

    api.responder = hold
    try:
        with pytest.raises(TaskerApiError) as slow:
            TaskerClient(api.url, timeout=0.2).get_task(7)
    finally:
        released.set()
    assert slow.value.status is None
    assert "timed out" in slow.value.message
    assert len(api.requests) == 1, "a timed-out request is not sent again"


def test_a_timeout_raises_with_the_last_seen_state(api: StubApi) -> None:
    finished = threading.Event()
    hold_like_the_server(api, 7, finished)
    started = time.monotonic()
    with pytest.raises(TaskerWaitTimeout) as timed_out:
        TaskerClient(api.url).wait_task(7, timeout=0.3)
    assert time.monotonic() - started >= 0.3, "no timeout before the time given"
    error = timed_out.value
    assert isinstance(error, TaskerApiError)
    assert (error.task_id, error.state, error.timeout) == (7, "in_progress", 0.3)
    assert error.task == task_view(7, "in_progress")
    assert (error.status, error.code) == (None, None)
    assert str(error) == "task 7 did not finish within 0.3 s (last seen state: in_progress)"
    # Each poll asks for no more than what was left of the 0.3 s.
    waits = [wait_ms_of(request) for request in api.requests]
    assert 250 < waits[0] <= 300, waits
    assert all(wait <= 300 for wait in waits), waits


def test_a_timeout_of_zero_looks_once(api: StubApi) -> None:
    answer_states(api, 7, ["pending"])
    with pytest.raises(TaskerWaitTimeout) as timed_out:
        TaskerClient(api.url).wait_task(7, timeout=0)
    assert timed_out.value.state == "pending"
    assert [request["path"] for request in api.requests] == ["/v1/tasks/7?wait_ms=0"]

    answer_states(api, 7, ["complete"])
    assert TaskerClient(api.url).wait_task(7, timeout=0)["state"] == "complete"


def test_long_timeouts_are_cut_into_polls_of_at_most_30_s(api: StubApi) -> None:
    answer_states(api, 7, ["complete"])
    client = TaskerClient(api.url)
    client.wait_task(7, timeout=3600)
    client.wait_task(7, timeout=12.5)
    client.wait_task(7, timeout=float("inf"))
    first, second, third = (wait_ms_of(request) for request in api.requests)
    assert first == third == LONG_POLL_MS
    assert 12_000 < second <= 12_500


def test_a_server_answering_at_once_is_not_polled_in_a_tight_loop(api: StubApi) -> None:
    answer_states(api, 7, ["in_progress"])
    with pytest.raises(TaskerWaitTimeout):
        TaskerClient(api.url).wait_task(7, timeout=0.5)
    # Polls start MIN_POLL_INTERVAL (0.2 s) apart, and one more at the deadline.
    assert MIN_POLL_INTERVAL == 0.2
    assert 2 <= len(api.requests) <= 4, [request["at"] for request in api.requests]


def test_invalid_query_is_raised_as_the_api_error(api: StubApi) -> None:
    refusal = {
        "error": {
            "code": "invalid_query",
            "message": "invalid query: wait_ms: wait_ms is 90000; at most 60000",
            "details": [{"pointer": "wait_ms", "message": "wait_ms is 90000; at most 60000"}],
        }
    }
    api.responder = lambda request: (400, refusal)
    with pytest.raises(TaskerApiError) as refused:
        TaskerClient(api.url).wait_task(7, timeout=5)
    error = refused.value
    assert not isinstance(error, TaskerWaitTimeout)
    assert (error.status, error.code) == (400, "invalid_query")
    assert error.details == refusal["error"]["details"]
    assert "wait_ms: wait_ms is 90000; at most 60000" in str(error)
    assert len(api.requests) == 1, "a refusal ends the wait"


def test_waiting_for_an_unknown_task_raises_task_not_found(api: StubApi) -> None:
    answer_states(api, 7, ["complete"])
    with pytest.raises(TaskerApiError) as missing:
        TaskerClient(api.url).wait_task(8)
    assert (missing.value.status, missing.value.code) == (404, "task_not_found")


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_a_negative_timeout_is_refused(api: StubApi, timeout: float) -> None:
    with pytest.raises(ValueError):
        TaskerClient(api.url).wait_task(7, timeout=timeout)
    with pytest.raises(ValueError):
        TaskerClient(api.url).create_and_wait("ns", "name", {}, timeout=timeout)
    assert api.requests == []


def create_then_answer(api: StubApi, task_id: int, states: list[str]) -> None:
    answer_states(api, task_id, states)
    polls = api.responder
    assert polls is not None

    def respond(request: dict[str, Any]) -> Answer:
        if request["method"] == "POST":
            return (201, {"task_id": task_id, "created": True})
        return polls(request)

    api.responder = respond


def test_create_and_wait_creates_the_task_then_waits_for_it(api: StubApi) -> None:
    create_then_answer(api, 9, ["in_progress", "complete"])
    task = TaskerClient(api.url).create_and_wait(
        "examples", "diamond", {"n": 1}, version="1.0.0", idempotency_key="k-1", tags=["x"]
    )
    assert task == task_view(9, "complete")
    post, *polls = api.requests
    assert (post["method"], post["path"]) == ("POST", "/v1/tasks")
    assert post["body"] == {
        "namespace": "examples",
        "name": "diamond",
        "context": {"n": 1},
        "version": "1.0.0",
        "idempotency_key": "k-1",
        "tags": ["x"],
    }
    assert [poll["path"] for poll in polls] == [f"/v1/tasks/9?wait_ms={LONG_POLL_MS}"] * 2


def test_create_and_wait_times_out_naming_the_task_created(api: StubApi) -> None:
    create_then_answer(api, 9, ["pending"])
    with pytest.raises(TaskerWaitTimeout) as timed_out:
        TaskerClient(api.url).create_and_wait("examples", "diamond", {}, timeout=0)
    assert (timed_out.value.task_id, timed_out.value.state) == (9, "pending")
    assert [request["path"] for request in api.requests] == [
        "/v1/tasks",
        "/v1/tasks/9?wait_ms=0",
    ]


def test_create_and_wait_reports_a_refused_creation(api: StubApi) -> None:
    api.routes[("POST", "/v1/tasks")] = (
        404,
        {"error": {"code": "unknown_template", "message": "no template examples/nope"}},
    )
    with pytest.raises(TaskerApiError) as refused:
        TaskerClient(api.url).create_and_wait("examples", "nope", {})
    assert (refused.value.status, refused.value.code) == (404, "unknown_template")
    assert len(api.requests) == 1


# -- connections ----------------------------------------------------------------------------


def test_one_kept_alive_connection_carries_every_request(keep_alive_api: StubApi) -> None:
    create_then_answer(keep_alive_api, 9, ["in_progress", "complete"])
    client = TaskerClient(keep_alive_api.url)
    client.create_and_wait("examples", "diamond", {})
    client.get_task(9)
    assert len(keep_alive_api.requests) == 4
    assert len({request["port"] for request in keep_alive_api.requests}) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(keep_alive_api: StubApi) -> None:
    keep_alive_api.close_after_answer = True
    create_then_answer(keep_alive_api, 9, ["complete"])
    client = TaskerClient(keep_alive_api.url)
    for n in range(1, 4):
        assert client.get_task(9)["state"] == "complete"
        wait_until_closed(keep_alive_api, n)
    assert client.initialize_task("examples", "diamond", {}) == 9
    assert len(keep_alive_api.requests) == 4, "each request was sent once"
    assert len({request["port"] for request in keep_alive_api.requests}) == 4


def test_a_get_cut_off_on_a_reused_connection_is_sent_again(keep_alive_api: StubApi) -> None:
    answer_states(keep_alive_api, 9, ["complete"])
    polls = keep_alive_api.responder
    assert polls is not None
    keep_alive_api.responder = lambda request: (
        None if len(keep_alive_api.requests) == 2 else polls(request)
    )
    client = TaskerClient(keep_alive_api.url)
    client.get_task(9)
    assert client.wait_task(9)["state"] == "complete"
    ports = [request["port"] for request in keep_alive_api.requests]
    assert len(ports) == 3 and ports[0] == ports[1] != ports[2], ports


def test_a_post_cut_off_after_it_was_sent_is_not_sent_again(keep_alive_api: StubApi) -> None:
    answer_states(keep_alive_api, 9, ["complete"])
    polls = keep_alive_api.responder
    assert polls is not None
    keep_alive_api.responder = lambda request: (
        None if request["method"] == "POST" else polls(request)
    )
    client = TaskerClient(keep_alive_api.url)
    client.get_task(9)
    with pytest.raises(TaskerApiError) as lost:
        client.initialize_task("examples", "diamond", {})
    assert lost.value.status is None and "cannot reach" in lost.value.message
    assert [request["method"] for request in keep_alive_api.requests] == ["GET", "POST"]
    # The client recovers on a new connection.
    assert client.get_task(9)["state"] == "complete"


def test_threads_share_a_client_without_waiting_for_each_other(keep_alive_api: StubApi) -> None:
    finished = threading.Event()
    hold_like_the_server(keep_alive_api, 7, finished)
    client = TaskerClient(keep_alive_api.url)
    with ThreadPoolExecutor(4) as pool:
        waits = [pool.submit(client.wait_task, 7) for _ in range(3)]
        # Three long polls are held at once, each on its own connection; an ordinary request
        # from yet another thread is answered meanwhile.
        wait_for_requests(keep_alive_api, 3)
        assert not any(wait.done() for wait in waits)
        assert pool.submit(client.get_task, 7).result(timeout=10)["state"] == "in_progress"
        finished.set()
        assert [wait.result(timeout=10)["state"] for wait in waits] == ["complete"] * 3
    assert len({request["port"] for request in keep_alive_api.requests}) >= 3
    client.close()
    assert client.get_task(7)["state"] == "complete", "a closed client reconnects"


def test_the_client_identifies_itself(api: StubApi) -> None:
    answer_states(api, 7, ["complete"])
    TaskerClient(api.url).get_task(7)
    assert api.requests[0]["headers"]["User-Agent"].startswith("tasker-worker-python/")
