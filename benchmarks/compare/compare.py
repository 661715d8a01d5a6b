#!/usr/bin/env python3
"""Tasker beside Celery + Redis: the same workloads, one system after the other, as a client
sees them (wall clock, client side).

Run it through ``benchmarks/compare/run.sh`` (which prepares the venv); ``--help`` lists the
options. Measures, for each system:

1. latency: one sequential client creates a task and waits for its end, N times in turn
   (after a warm-up), for a 3-step chain and a 4-step diamond: p50/p99 in ms;
2. throughput: C concurrent clients, each creating a diamond and waiting for it, M diamonds in
   all: tasks/s and steps/s (4 steps per diamond).

Each system runs alone on the machine: its processes are started before its phases and
stopped after them. Every task is checked (Tasker: state ``complete``; Celery: the expected
return value); any failure makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEMPLATES = HERE / "templates"

STEPS = {"chain": 3, "diamond": 4}
# Tasker: (namespace, name) of each workload's template.
TASKER_TEMPLATES = {"chain": ("bench", "chain3"), "diamond": ("examples", "diamond")}
FINAL_STATES = {"complete", "error", "cancelled", "resolved_manually"}
LONG_POLL_MS = 30_000


# --------------------------------------------------------------------------------------------
# Processes we start, and only those, are stopped at the end.


class Proc:
    """A child process in its own process group, logging to a file."""

    registry: list[Proc] = []

    def __init__(self, label: str, argv: list[str], log: Path, **kwargs):
        self.label = label
        self.log = log
        self.logfile = open(log, "wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )
        Proc.registry.append(self)
        pidfile = os.environ.get("BENCH_PIDFILE")
        if pidfile:
            with open(pidfile, "a") as f:
                f.write(f"{self.popen.pid}\n")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if self in Proc.registry:
            Proc.registry.remove(self)
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may hold children (Celery's prefork pool) even after the leader exited.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.logfile.close()
        pidfile = os.environ.get("BENCH_PIDFILE")
        if pidfile:
            try:
                with open(pidfile) as f:
                    pids = [line.strip() for line in f if line.strip() != str(self.pid)]
                with open(pidfile, "w") as f:
                    f.write("".join(f"{pid}\n" for pid in pids if pid))
            except OSError:
                pass

    @classmethod
    def stop_all(cls) -> None:
        for proc in reversed(list(cls.registry)):
            proc.stop()


def group_cpu_seconds(pgids: list[int]) -> float:
    """User + system CPU of every live process in these process groups (and their reaped
    children), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    wanted = set(pgids)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime..cstime fields 14..17.
        if int(fields[2]) in wanted:
            total += sum(int(x) for x in fields[11:15])
    return total / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float, procs: list[Proc] = ()) -> None:
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.label} exited (status {proc.popen.returncode}) while waiting for "
                    f"{what}; last lines of {proc.log}:\n{proc.tail()}"
                )
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            last_error = error
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


# --------------------------------------------------------------------------------------------
# Statistics and the results of one phase.


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        values = sorted(self.latencies_ms)
        return {
            "count": len(values),
            "failures": len(self.failures),
            "p50_ms": round(percentile(values, 50), 3),
            "p99_ms": round(percentile(values, 99), 3),
            "mean_ms": round(sum(values) / len(values), 3) if values else None,
            "max_ms": round(values[-1], 3) if values else None,
            "first_failures": self.failures[:5],
        }


# --------------------------------------------------------------------------------------------
# Tasker.


class TaskerHttp:
    """One persistent (keep-alive) HTTP connection to `tasker serve`."""

    def __init__(self, port: int, long_poll: bool):
        self.port = port
        self.long_poll = long_poll
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_POLL_MS / 1000 + 30)
        self.reconnects = 0

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: it never saw the request.
                self.conn.close()
                self.reconnects += 1
                if attempt == 2:
                    raise
            except BaseException:
                self.conn.close()  # a fresh connection for the next request
                raise
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return response.status, parsed

    def create(self, workload: str) -> int:
        namespace, name = TASKER_TEMPLATES[workload]
        status, body = self.request(
            "POST", "/v1/tasks", {"namespace": namespace, "name": name, "context": {}}
        )
        if status != 201:
            raise RuntimeError(f"POST /v1/tasks answered {status}: {body}")
        return body["task_id"]

    def wait(self, task_id: int, timeout: float) -> str:
        """The task's final state, or 'timeout'."""
        deadline = time.monotonic() + timeout
        path = f"/v1/tasks/{task_id}"
        if self.long_poll:
            path += f"?wait_ms={LONG_POLL_MS}"
        while True:
            status, body = self.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body}")
            state = body["state"]
            if state in FINAL_STATES:
                return state
            if time.monotonic() > deadline:
                return f"timeout (still {state})"
            if not self.long_poll:
                time.sleep(0.001)

    def close(self) -> None:
        self.conn.close()


class TaskerSystem:
    name = "Tasker"

    def __init__(self, args, tmp: Path):
        self.args = args
        self.tmp = tmp / "tasker"
        self.tmp.mkdir()
        # A private copy: a rebuild of target/release/tasker during the run cannot swap it.
        self.source_bin = Path(args.tasker_bin).resolve()
        self.bin_mtime = dt.datetime.fromtimestamp(self.source_bin.stat().st_mtime, dt.timezone.utc)
        self.bin = self.tmp / "tasker"
        shutil.copy2(self.source_bin, self.bin)
        self.worker_kind = args.tasker_worker
        self.long_poll = False
        self.wait_mode = "?"
        self.procs: list[Proc] = []

    def info(self) -> dict:
        version = subprocess.run(
            [self.bin, "--version"], capture_output=True, text=True
        ).stdout.strip()
        return {
            "binary": f"{self.source_bin} (built {self.bin_mtime:%Y-%m-%d %H:%M} UTC)",
            "version": version,
            "commit": git_commit(),
            "store": "SQLite (fresh file in a temporary directory)",
            "workers": f"2 × {self.worker_description()}",
            "wait": self.wait_mode,
        }

    def worker_description(self) -> str:
        if self.worker_kind == "python":
            return "Python SDK worker (python -m tasker_worker --handlers tasker_worker.testing)"
        return "Rust worker (tasker worker --handlers tasker.test)"

    def start(self) -> None:
        self.http_port = free_port()
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        # No TASKER_* setting of the caller's (a database URL, a config file, an execution log
        # for tasker.test) may leak into the processes under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKER_")}
        env.setdefault("RUST_LOG", "warn")
        serve = Proc(
            "tasker serve",
            [
                str(self.bin), "serve",
                "--data-dir", str(self.tmp / "data"),
                "--endpoint", endpoint,
                "--http-addr", f"127.0.0.1:{self.http_port}",
                "--templates", str(TEMPLATES),
                "--orchestrator-id", "bench-compare",
            ],
            self.tmp / "serve.log",
            env=env,
            cwd=self.tmp,
        )
        self.procs.append(serve)
        probe_http = TaskerHttp(self.http_port, long_poll=False)
        wait_until("tasker serve's /health", lambda: probe_http.request("GET", "/health")[0] == 200,
                   30, [serve])

        # Long poll or polling? Asked once, before any worker exists: a task created now cannot
        # finish, so a server that honours wait_ms holds the request for the whole wait.
        probe_id = probe_http.create("diamond")
        started = time.monotonic()
        status, body = probe_http.request("GET", f"/v1/tasks/{probe_id}?wait_ms=600")
        held = time.monotonic() - started
        if self.args.tasker_wait == "poll":
            self.wait_mode = "polling (GET /v1/tasks/{id} every 1 ms: --tasker-wait poll)"
        elif status == 200 and held >= 0.5:
            self.long_poll = True
            self.wait_mode = f"long poll (GET /v1/tasks/{{id}}?wait_ms={LONG_POLL_MS})"
        elif status == 200:
            self.wait_mode = (
                f"polling (GET /v1/tasks/{{id}} every 1 ms: the server answered ?wait_ms at once, "
                f"in {held * 1000:.0f} ms, so it ignores it)"
            )
        else:
            self.wait_mode = (
                f"polling (GET /v1/tasks/{{id}} every 1 ms: the server refused ?wait_ms with "
                f"{status})"
            )

        for i in range(2):
            if self.worker_kind == "python":
                argv = [sys.executable, "-m", "tasker_worker", "--connect", endpoint,
                        "--handlers", "tasker_worker.testing", "--name", f"bench-python-{i}"]
            else:
                argv = [str(self.bin), "worker", "--connect", endpoint, "--handlers",
                        "tasker.test", "--name", f"bench-rust-{i}"]
            self.procs.append(Proc(f"worker {i}", argv, self.tmp / f"worker-{i}.log", env=env,
                                   cwd=self.tmp))

        def two_workers() -> bool:
            status, body = probe_http.request("GET", "/health")
            return status == 200 and body["engine"]["workers_connected"] >= 2

        wait_until("2 workers connected", two_workers, 30, self.procs)
        probe_http.long_poll = self.long_poll
        state = probe_http.wait(probe_id, 30)
        if state != "complete":
            raise RuntimeError(f"the probe task {probe_id} ended {state}")
        probe_http.close()

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.label} exited; last lines of {proc.log}:\n{proc.tail()}")

    def pgids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def client(self) -> TaskerHttp:
        return TaskerHttp(self.http_port, self.long_poll)

    def run_one(self, client: TaskerHttp, workload: str) -> str | None:
        """Creates one task and waits for its end; None when it completed, else why not."""
        task_id = client.create(workload)
        state = client.wait(task_id, self.args.timeout)
        return None if state == "complete" else f"task {task_id}: {state}"

    def close_client(self, client: TaskerHttp) -> None:
        client.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []


# --------------------------------------------------------------------------------------------
# Celery.


class CelerySystem:
    name = "Celery"

    def __init__(self, args, tmp: Path):
        self.args = args
        self.tmp = tmp / "celery"
        self.tmp.mkdir()
        self.procs: list[Proc] = []
        self.lock = threading.Lock()
        self.backends: list = []

    def info(self) -> dict:
        import celery
        import kombu
        import redis

        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return {
            "celery": celery.__version__,
            "kombu": kombu.__version__,
            "redis_py": redis.__version__,
            "redis_server": server.stdout.strip(),
            "broker_and_backend": "Redis (own redis-server on loopback, no persistence)",
            "workers": "celery worker --pool prefork --concurrency 2",
            "wait": "AsyncResult.get(timeout=30) (Redis pub/sub result consumer)",
        }

    def start(self) -> None:
        port = free_port()
        redis_proc = Proc(
            "redis-server",
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp), "--daemonize", "no"],
            self.tmp / "redis.log",
        )
        self.procs.append(redis_proc)
        self.url = f"redis://127.0.0.1:{port}/0"
        os.environ["BENCH_REDIS_URL"] = self.url

        import redis

        server = redis.Redis.from_url(self.url)
        wait_until("redis-server", server.ping, 20, [redis_proc])

        sys.path.insert(0, str(HERE))
        import celery_app

        self.celery_app = celery_app
        self.app = celery_app.app
        self.app.conf.broker_url = self.url
        self.app.conf.result_backend = self.url
        # Enough broker connections for every client thread, so the client side does not
        # queue on the producer pool.
        self.app.conf.broker_pool_limit = max(10, self.args.clients + 4)

        celery_bin = Path(sys.executable).parent / "celery"
        env = dict(os.environ, BENCH_REDIS_URL=self.url)
        worker = Proc(
            "celery worker",
            [str(celery_bin), "-A", "celery_app", "worker", "--pool", "prefork",
             "--concurrency", "2", "--loglevel", "WARNING", "--hostname", "bench@%h"],
            self.tmp / "worker.log",
            env=env,
            cwd=HERE,
        )
        self.procs.append(worker)
        wait_until("the celery worker", lambda: bool(self.app.control.ping(timeout=0.5)), 60,
                   self.procs)
        # First run of each canvas, checked, before anything is measured.
        self.client()
        for workload in STEPS:
            failure = self.run_one(None, workload)
            if failure:
                raise RuntimeError(f"Celery probe {workload}: {failure}")

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.label} exited; last lines of {proc.log}:\n{proc.tail()}")

    def pgids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def client(self):
        # Celery keeps one result backend (and its pub/sub connection) per thread.
        with self.lock:
            self.backends.append(self.app.backend)
        return None

    def release_backends(self) -> None:
        """Drops the results Celery still tracks and closes each pub/sub connection, while Redis
        still runs (otherwise each result, when collected at exit, retries Redis for seconds)."""
        gc.collect()
        for backend in self.backends:
            try:
                for mapping in backend._pending_results:
                    for waiters in list(mapping.values()):
                        for result in list(waiters.values()):
                            backend.remove_pending_result(result)
                backend.result_consumer.stop()
            except Exception as error:  # noqa: BLE001 - best effort, at the end
                print(f"   (releasing a Celery result backend: {error})", file=sys.stderr)
        self.backends = []

    def run_one(self, client, workload: str) -> str | None:
        build, expected = self.celery_app.WORKLOADS[workload]
        result = build().apply_async()
        try:
            value = result.get(timeout=self.args.timeout)
        except Exception as error:  # noqa: BLE001 - timeouts and task errors are failures
            return f"{result.id}: {type(error).__name__}: {error}"
        return None if value == expected else f"{result.id}: returned {value!r}"

    def close_client(self, client) -> None:
        pass

    def stop(self) -> None:
        self.release_backends()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []


# --------------------------------------------------------------------------------------------
# The two measures.


def measure_latency(system, workload: str, warmup: int, count: int) -> dict:
    client = system.client()
    outcome = Outcome()
    try:
        for i in range(warmup + count):
            started = time.perf_counter()
            try:
                failure = system.run_one(client, workload)
            except Exception as error:  # noqa: BLE001
                failure = f"{type(error).__name__}: {error}"
            elapsed_ms = (time.perf_counter() - started) * 1000
            if failure:
                outcome.failures.append(failure)
                system.check_alive()
            elif i >= warmup:
                outcome.latencies_ms.append(elapsed_ms)
    finally:
        system.close_client(client)
    return {"workload": workload, "warmup": warmup, **outcome.summary()}


def measure_throughput(system, workload: str, total: int, clients: int) -> dict:
    lock = threading.Lock()
    next_index = [0]
    outcomes = [Outcome() for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    finish_times = [0.0] * clients

    def client_thread(n: int) -> None:
        outcome = outcomes[n]
        client = None
        try:
            client = system.client()
            # One untimed task per client first: connections are set up outside the window.
            failure = system.run_one(client, workload)
            if failure:
                outcome.failures.append(f"warm-up: {failure}")
        except Exception as error:  # noqa: BLE001
            outcome.failures.append(f"warm-up: {type(error).__name__}: {error}")
        ready.wait()
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= total:
                    break
                started = time.perf_counter()
                try:
                    failure = system.run_one(client, workload)
                except Exception as error:  # noqa: BLE001
                    failure = f"{type(error).__name__}: {error}"
                if failure:
                    outcome.failures.append(failure)
                else:
                    outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
        finally:
            finish_times[n] = time.perf_counter()
            if client is not None:
                system.close_client(client)

    threads = [threading.Thread(target=client_thread, args=(n,), daemon=True)
               for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    cpu_before = group_cpu_seconds(system.pgids())
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = max(finish_times) - started
    cpu = group_cpu_seconds(system.pgids()) - cpu_before
    client_cpu = time.process_time() - client_cpu_before

    merged = Outcome()
    for outcome in outcomes:
        merged.latencies_ms.extend(outcome.latencies_ms)
        merged.failures.extend(outcome.failures)
    completed = len(merged.latencies_ms)
    return {
        "workload": workload,
        "tasks": total,
        "clients": clients,
        "completed": completed,
        "elapsed_s": round(elapsed, 3),
        "tasks_per_s": round(completed / elapsed, 1),
        "steps_per_s": round(completed * STEPS[workload] / elapsed, 1),
        "system_cpu_s": round(cpu, 2),
        "system_cpu_ms_per_task": round(cpu * 1000 / completed, 3) if completed else None,
        "client_cpu_s": round(client_cpu, 2),
        "task_latency": merged.summary(),
        "failures": len(merged.failures),
    }


def run_system(system, args) -> dict:
    print(f"\n== {system.name}: starting", flush=True)
    started = time.monotonic()
    system.start()
    print(f"   ready in {time.monotonic() - started:.1f} s", flush=True)
    report = {"info": system.info(), "latency": {}}
    try:
        for workload in ("chain", "diamond"):
            print(f"   latency, {workload}: {args.warmup} warm-up + {args.latency_tasks} tasks, "
                  "one client ...", flush=True)
            result = measure_latency(system, workload, args.warmup, args.latency_tasks)
            report["latency"][workload] = result
            print(f"     p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                  f"failures {result['failures']}", flush=True)
        print(f"   throughput: {args.tasks} diamonds, {args.clients} clients ...", flush=True)
        result = measure_throughput(system, "diamond", args.tasks, args.clients)
        report["throughput"] = result
        print(f"     {result['tasks_per_s']:.1f} tasks/s, {result['steps_per_s']:.1f} steps/s in "
              f"{result['elapsed_s']:.2f} s, failures {result['failures']}", flush=True)
        system.check_alive()
    finally:
        system.stop()
    report["failures"] = (
        sum(r["failures"] for r in report["latency"].values())
        + report.get("throughput", {}).get("failures", 0)
    )
    return report


# --------------------------------------------------------------------------------------------
# The report.


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.strip()
    return commit + (" (working tree with uncommitted changes)" if dirty else "")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def times_word(ratio: float, better: str, worse: str) -> str:
    """'Tasker 2.3× faster' when ratio > 1 (Tasker better), 'Tasker 1.5× slower' otherwise."""
    if not ratio or math.isnan(ratio) or math.isinf(ratio):
        return "—"
    if ratio >= 1:
        return f"Tasker {ratio:.2f}× {better}"
    return f"Tasker {1 / ratio:.2f}× {worse}"


def table_rows(reports: dict, args) -> list[tuple[str, str, str, str]]:
    celery, tasker = reports.get("celery"), reports.get("tasker")
    rows = []

    def value(report, path):
        node = report
        for key in path:
            if node is None:
                return None
            node = node.get(key)
        return node

    def row(label, path, fmt, lower_is_better, better, worse):
        c, t = value(celery, path), value(tasker, path)
        ratio_text = ""
        if c is not None and t is not None and c > 0 and t > 0:
            ratio = c / t if lower_is_better else t / c
            ratio_text = times_word(ratio, better, worse)
        rows.append((label, "" if c is None else fmt.format(c), "" if t is None else fmt.format(t),
                     ratio_text))

    n = args.latency_tasks
    for workload, shape in (("chain", "3-step chain"), ("diamond", "diamond")):
        for p in ("p50", "p99"):
            row(f"latency {shape}, {p} (ms; 1 client, {n} tasks)", ("latency", workload, f"{p}_ms"),
                "{:.2f}", True, "faster", "slower")
    m, c = args.tasks, args.clients
    row(f"throughput, diamonds/s ({c} clients, {m} diamonds)", ("throughput", "tasks_per_s"),
        "{:.1f}", False, "faster", "slower")
    row("throughput, steps/s (4 per diamond)", ("throughput", "steps_per_s"), "{:.1f}", False,
        "faster", "slower")
    for p in ("p50", "p99"):
        row(f"diamond latency under that load, {p} (ms)", ("throughput", "task_latency", f"{p}_ms"),
            "{:.1f}", True, "faster", "slower")
    row("CPU of the system under test per diamond (ms)", ("throughput", "system_cpu_ms_per_task"),
        "{:.2f}", True, "less CPU", "more CPU")
    row("CPU of the benchmark client per diamond (ms)", ("throughput", "client_cpu_ms_per_task"),
        "{:.2f}", True, "less CPU", "more CPU")
    rows.append(("failed tasks", *(str(r["failures"]) if r else "" for r in (celery, tasker)), ""))
    return rows


def print_table(rows) -> None:
    header = ("metric", "Celery", "Tasker", "Tasker vs Celery")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in
                         enumerate(widths)) + "|")
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        print("| " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, metavar="M",
                        help="diamonds in the throughput phase (default 2000)")
    parser.add_argument("--latency-tasks", type=int, default=300, metavar="N",
                        help="measured tasks per workload in the latency phase (default 300)")
    parser.add_argument("--warmup", type=int, default=30, metavar="W",
                        help="unmeasured tasks before each latency series (default 30)")
    parser.add_argument("--clients", type=int, default=32, metavar="C",
                        help="concurrent clients (threads) in the throughput phase (default 32)")
    parser.add_argument("--only", choices=("tasker", "celery"),
                        help="run one system only")
    parser.add_argument("--tasker-worker", choices=("rust", "python"), default="rust",
                        help="Tasker's 2 worker processes: `tasker worker` (default) or the "
                             "Python SDK's `python -m tasker_worker`")
    parser.add_argument("--tasker-wait", choices=("auto", "poll"), default="auto",
                        help="how Tasker clients wait: auto (the long poll GET "
                             "/v1/tasks/{id}?wait_ms=N when the server supports it, checked at "
                             "start-up; else polling every 1 ms) or poll (always poll)")
    parser.add_argument("--tasker-bin", type=Path,
                        default=Path(os.environ.get("TASKER_BIN", REPO / "target/release/tasker")),
                        help="the tasker binary (default $TASKER_BIN, else target/release/tasker)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a task may take before it counts as failed (default 30)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write a JSON report")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temporary directory (process logs, data) and print it")
    args = parser.parse_args()

    systems = ["celery", "tasker"] if args.only is None else [args.only]
    if "tasker" in systems and not os.access(args.tasker_bin, os.X_OK):
        print(f"compare: no tasker binary at {args.tasker_bin} (set TASKER_BIN, or build it with "
              "`cargo build --release -p tasker-cli`)", file=sys.stderr)
        return 2
    if "celery" in systems and shutil.which("redis-server") is None:
        print("compare: redis-server not found; install it (Debian/Ubuntu: "
              "`apt-get install redis-server`)", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="tasker-compare-"))
    started_at = dt.datetime.now(dt.timezone.utc)
    reports: dict = {}
    exit_status = 0
    try:
        print(f"benchmarks/compare: {started_at:%Y-%m-%d %H:%M} UTC, nproc {os.cpu_count()}, "
              f"load average {load_average()}, tasker {git_commit()}, logs in {tmp}", flush=True)
        for name in systems:
            system = (TaskerSystem if name == "tasker" else CelerySystem)(args, tmp)
            reports[name] = run_system(system, args)
            reports[name]["info"]["load_average_after"] = load_average()
    except BaseException as error:
        exit_status = 1
        if isinstance(error, SystemExit) and isinstance(error.code, int):
            exit_status = error.code or 1
        elif isinstance(error, KeyboardInterrupt):
            exit_status = 130
        if isinstance(error, SystemExit):
            print(f"\ncompare: stopped by a signal (exit {exit_status})", file=sys.stderr)
        else:
            print(f"\ncompare: {type(error).__name__}: {error}", file=sys.stderr)
        args.keep_logs = True
    finally:
        Proc.stop_all()

    for report in reports.values():
        throughput = report.get("throughput")
        if throughput and throughput["completed"]:
            throughput["client_cpu_ms_per_task"] = round(
                throughput["client_cpu_s"] * 1000 / throughput["completed"], 3)

    failures = sum(r["failures"] for r in reports.values())
    if reports:
        print()
        for name, report in reports.items():
            for key, val in report["info"].items():
                print(f"{name} {key}: {val}")
        print()
        print_table(table_rows(reports, args))
        print()
        print("latency: one client creates a task and waits for its end, in turn; throughput: "
              f"{args.clients} clients doing the same at once; wall clock on the client side.")
        for name, report in reports.items():
            for phase in [*report["latency"].values(), report.get("throughput", {})]:
                bad = phase.get("task_latency", phase).get("first_failures") or []
                for failure in bad:
                    print(f"{name} failure ({phase.get('workload')}): {failure}", file=sys.stderr)

    if args.json:
        ratios = {}
        if "celery" in reports and "tasker" in reports:
            for label, celery, tasker, text in table_rows(reports, args):
                if text:
                    ratios[label] = text
        document = {
            "started_at": started_at.isoformat(timespec="seconds"),
            "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "config": {"tasks": args.tasks, "latency_tasks": args.latency_tasks,
                       "warmup": args.warmup, "clients": args.clients,
                       "tasker_worker": args.tasker_worker, "tasker_wait": args.tasker_wait,
                       "timeout_s": args.timeout},
            "systems": reports,
            "ratios": ratios,
            "failures": failures,
            "ok": exit_status == 0 and failures == 0,
            "exit_status": exit_status or (1 if failures else 0),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"JSON report: {args.json}")

    if args.keep_logs:
        print(f"logs and data kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if exit_status:
        return exit_status
    if failures:
        print(f"compare: {failures} task(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
