"""A real Tasker system for end-to-end tests: the ``tasker`` binary run as ``tasker serve`` on
free loopback ports with a temporary database and templates directory, and worker processes in
any language (Python ``python -m tasker_worker``, Ruby ``bin/tasker-worker``, Rust ``tasker
worker``) connected to it.

Every wait polls an observable state (the HTTP API, the ``tasker.test`` execution log, a
process's exit status) a bounded number of times and fails the test when the bound is reached;
nothing sleeps in the hope that something has happened.

Used by ``tests/test_end_to_end.py`` and by the repository's ``tests/mixed_fleet`` suite (which
puts this directory on ``sys.path``), so it imports nothing from ``conftest``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tasker_worker import TaskerClient

REPO_DIR = Path(__file__).resolve().parents[3]
SDK_PYTHON_DIR = REPO_DIR / "sdk" / "python"
SDK_RUBY_DIR = REPO_DIR / "sdk" / "ruby"
EXAMPLE_TEMPLATES = REPO_DIR / "examples" / "templates"

#: Interval between two polls of an observable state, in seconds.
POLL_INTERVAL = 0.05
#: Upper bound on one wait, in seconds; reaching it fails the test.
GUARD_SECONDS = 90.0
#: The number of polls a wait makes before it gives up.
MAX_POLLS = int(GUARD_SECONDS / POLL_INTERVAL)
#: Heartbeats between orchestrator and workers every 200 ms; a worker silent for 5 intervals
#: (1 s) is declared dead and its steps are dispatched elsewhere.
HEARTBEAT_INTERVAL_MS = 200
LIVENESS = 5

#: Tasks in these states are finished.
FINISHED_STATES = frozenset({"complete", "error", "cancelled", "resolved_manually"})

T = TypeVar("T")


def sdks_required() -> bool:
    """``TASKER_REQUIRE_SDKS=1`` (CI): a test that cannot run fails instead of skipping."""
    return os.environ.get("TASKER_REQUIRE_SDKS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skips the test loudly, or fails it under ``TASKER_REQUIRE_SDKS=1``."""
    banner = "#" * 70
    print(f"\n{banner}\nSKIPPED end-to-end: {reason}\n{banner}", file=sys.stderr)
    if sdks_required():
        pytest.fail(f"TASKER_REQUIRE_SDKS=1 forbids skipping: {reason}", pytrace=False)
    pytest.skip(f"end-to-end: {reason}")


def tasker_binary() -> Path:
    """The ``tasker`` binary: ``$TASKER_BIN``, else ``target/debug/tasker`` in this checkout.
    Skips (or fails, see :func:`skip_or_fail`) when there is none."""
    configured = os.environ.get("TASKER_BIN")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            skip_or_fail(f"TASKER_BIN={configured} is not an executable file")
        return path
    path = REPO_DIR / "target" / "debug" / "tasker"
    if not (path.is_file() and os.access(path, os.X_OK)):
        skip_or_fail(
            f"no tasker binary: TASKER_BIN is unset and {path} does not exist "
            "(run `cargo build -p tasker-cli`, or scripts/test.sh which sets TASKER_BIN)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``TASKER_*`` settings (so a developer's
    configuration cannot change what the test starts) and ``RUST_LOG``, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKER_") and key != "RUST_LOG"
    }
    env.update(extra or {})
    return env


def wait_until(probe: Callable[[], T | None], what: str, guard: float = GUARD_SECONDS) -> T:
    """Calls ``probe`` every :data:`POLL_INTERVAL` until it returns something other than
    ``None`` or ``False``, and returns that; fails the test after ``guard`` seconds."""
    polls = max(1, int(guard / POLL_INTERVAL))
    for _ in range(polls):
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"timed out after {guard:.0f} s waiting for {what}", pytrace=False)


class Process:
    """A child process whose standard error goes to a log file."""

    def __init__(self, label: str, command: list[str], log: Path, env: dict[str, str], cwd: Path):
        self.label = label
        self.command = command
        self.log = log
        with open(log, "wb") as output:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=GUARD_SECONDS)

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown) and the exit status; SIGKILL if it does not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=GUARD_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.label} did not exit after SIGTERM:\n{self.log_text()}")


@dataclass
class Worker:
    """A worker process and the id it registers with."""

    process: Process
    worker_id: str
    language: str


class LiveTasker:
    """One ``tasker serve`` on free ports in ``directory``, and the workers started against it.

    ``templates`` are copied into ``directory/templates`` (the example templates by default).
    Call :meth:`close` at the end (stops every worker, then the orchestrator).
    """

    def __init__(self, directory: Path, templates: Iterable[Path] | None = None) -> None:
        self.binary = tasker_binary()
        self.directory = directory
        self.templates_dir = directory / "templates"
        self.templates_dir.mkdir(parents=True, exist_ok=True)
        for template in templates if templates is not None else example_templates():
            shutil.copy(template, self.templates_dir / template.name)
        self.execution_log = directory / "executions.log"
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.http_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.workers: list[Worker] = []
        self.generation = 1
        self.serve = Process(
            "tasker serve",
            [
                str(self.binary),
                "serve",
                "--database-url",
                f"sqlite:{directory / 'tasker.db'}",
                "--endpoint",
                self.endpoint,
                "--http-addr",
                f"127.0.0.1:{self.http_port}",
                "--templates",
                str(self.templates_dir),
                "--heartbeat-interval-ms",
                str(HEARTBEAT_INTERVAL_MS),
                "--liveness",
                str(LIVENESS),
                "--poll-interval-ms",
                "500",
                "--orchestrator-id",
                "orchestrator-sdk-e2e",
            ],
            directory / "serve.log",
            child_environment({"RUST_LOG": "info"}),
            directory,
        )
        self.client = TaskerClient(self.base_url)
        self._wait_healthy()

    def restart(self) -> None:
        """SIGKILLs ``tasker serve`` and starts it again with the same database, ports and
        templates; waits until it is healthy."""
        self.serve.kill()
        self.generation += 1
        self.serve = Process(
            f"tasker serve (run {self.generation})",
            self.serve.command,
            self.directory / f"serve-{self.generation}.log",
            child_environment({"RUST_LOG": "info"}),
            self.directory,
        )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        def healthy() -> bool:
            status = self.serve.exited()
            if status is not None:
                pytest.fail(
                    f"tasker serve exited ({status}) before it was healthy:\n"
                    f"{self.serve.log_text()}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(healthy, f"tasker serve to answer {self.base_url}/health")

    # -- workers ---------------------------------------------------------------------------

    def _start(self, language: str, command: list[str], cwd: Path) -> Worker:
        worker_id = command[command.index("--worker-id") + 1]
        process = Process(
            f"{language} worker {worker_id}",
            command,
            self.directory / f"{worker_id}.log",
            child_environment({"TASKER_TEST_EXECUTION_LOG": str(self.execution_log)}),
            cwd,
        )
        worker = Worker(process, worker_id, language)
        self.workers.append(worker)
        return worker

    def start_python_worker(self, label: str, handlers: list[str], capacity: int = 10) -> Worker:
        """``python -m tasker_worker --handlers HANDLERS…`` (run from the repository root, so
        ``examples.python.x`` modules and relative paths resolve)."""
        worker_id = f"python-{label}-{secrets.token_hex(4)}"
        command = [
            sys.executable,
            "-m",
            "tasker_worker",
            "--connect",
            self.endpoint,
            "--worker-id",
            worker_id,
            "--capacity",
            str(capacity),
            "--shutdown-grace",
            "2",
            "--handlers",
            *handlers,
        ]
        return self._start("python", command, REPO_DIR)

    def start_ruby_worker(self, label: str, requires: list[str], capacity: int = 10) -> Worker:
        """``ruby -Ilib bin/tasker-worker --require FILE…`` (paths relative to the repository
        root)."""
        worker_id = f"ruby-{label}-{secrets.token_hex(4)}"
        command = [
            "ruby",
            f"-I{SDK_RUBY_DIR / 'lib'}",
            str(SDK_RUBY_DIR / "bin" / "tasker-worker"),
            "--connect",
            self.endpoint,
            "--worker-id",
            worker_id,
            "--capacity",
            str(capacity),
            "--shutdown-grace",
            "2",
        ]
        for required in requires:
            command += ["--require", required]
        return self._start("ruby", command, REPO_DIR)

    def start_rust_worker(self, label: str, handler_classes: list[str] | None = None) -> Worker:
        """``tasker worker`` with the Rust SDK's built-in handlers (all, or
        ``handler_classes``)."""
        worker_id = f"rust-{label}-{secrets.token_hex(4)}"
        command = [
            str(self.binary),
            "worker",
            "--connect",
            self.endpoint,
            "--worker-id",
            worker_id,
            "--shutdown-grace-ms",
            "2000",
        ]
        if handler_classes:
            command += ["--handlers", ",".join(handler_classes)]
        return self._start("rust", command, REPO_DIR)

    # -- tasks -----------------------------------------------------------------------------

    def wait_finished(self, task_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Polls ``GET /v1/tasks/{id}`` until every task is finished; the tasks, in order.
        Fails early, with the logs, when the orchestrator exits."""
        finished = []
        for task_id in task_ids:

            def probe(task_id: int = task_id) -> dict[str, Any] | None:
                if self.serve.exited() is not None:
                    pytest.fail(f"tasker serve exited:\n{self.serve.log_text()}", pytrace=False)
                task = self.client.get_task(task_id)
                return task if task["state"] in FINISHED_STATES else None

            finished.append(wait_until(probe, f"task {task_id} to finish\n{self.diagnostics()}"))
        return finished

    def executions(self) -> list[Execution]:
        """Every line of the ``tasker.test`` execution log so far."""
        try:
            text = self.execution_log.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [Execution.parse(line) for line in text.splitlines() if line]

    def diagnostics(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = [f"--- {self.serve.label} ({self.serve.log}):\n{self.serve.log_text()}"]
        for worker in self.workers:
            parts.append(f"--- {worker.process.label}:\n{worker.process.log_text()}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stops every worker (SIGTERM), then the orchestrator."""
        for worker in self.workers:
            if worker.process.exited() is None:
                worker.process.stop()
        if self.serve.exited() is None:
            self.serve.stop()


@dataclass(frozen=True)
class Execution:
    """One line of the execution log: ``<task_id> <step_name> <step_id> <attempt> <worker>``."""

    task_id: int
    step_name: str
    step_id: int
    attempt: int
    worker_id: str

    @classmethod
    def parse(cls, line: str) -> Execution:
        parts = line.split(" ")
        assert len(parts) == 5, f"bad execution log line {line!r}"
        return cls(int(parts[0]), parts[1], int(parts[2]), int(parts[3]), parts[4])


def example_templates() -> list[Path]:
    """Every template in ``examples/templates``."""
    return sorted(EXAMPLE_TEMPLATES.glob("*.yaml"))


def ancestors_by_step(task: dict[str, Any]) -> dict[str, list[str]]:
    """Each step's ancestors (sorted names), from the task view's ``depends_on`` lists."""
    parents = {step["name"]: step["depends_on"] for step in task["steps"]}
    found: dict[str, list[str]] = {}
    for name in parents:
        seen: set[str] = set()
        stack = list(parents[name])
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(parents[parent])
        found[name] = sorted(seen)
    return found


def steps_by_name(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in task["steps"]}
