"""``python -m tasker_worker``: run a worker for the handlers found in Python modules.

::

    python -m tasker_worker --connect tcp://127.0.0.1:5555 --handlers my_app.handlers
    python -m tasker_worker --connect tcp://127.0.0.1:5555 --handlers path/to/handlers.py:registry

SIGTERM or Ctrl-C shuts the worker down gracefully (a second one stops it at once). Exit status:
0 after a graceful shutdown, 2 for bad arguments or handlers, 3 when the orchestrator rejects the
worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .errors import ConfigurationError, HelloRejected
from .loading import load_handlers
from .worker import DEFAULT_CAPACITY, Worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasker_worker",
        description="Run a Tasker worker: connect to the orchestrator and run the steps of the "
        "handlers found in the given modules.",
    )
    parser.add_argument(
        "--connect",
        metavar="ENDPOINT",
        default=os.environ.get("TASKER_WORKER_ENDPOINT"),
        help="the orchestrator's worker endpoint, e.g. tcp://127.0.0.1:5555 "
        "(default: $TASKER_WORKER_ENDPOINT)",
    )
    parser.add_argument(
        "--handlers",
        metavar="SPEC",
        nargs="+",
        action="extend",
        required=True,
        help="where the handlers are: a module (package.module), module:attribute, or a file "
        "path (path/to/file.py[:attribute]); may repeat",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=DEFAULT_CAPACITY,
        help="steps run at once (default %(default)s)",
    )
    parser.add_argument("--name", help="display name (default: tasker-worker-python (pid N))")
    parser.add_argument(
        "--worker-id", help="worker id (default: <hostname>-<pid>-<random>); unique per process"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="heartbeat interval to ask the orchestrator for (default: the orchestrator's)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on shutdown, how long running steps may take to finish (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TASKER_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: INFO or $TASKER_LOG_LEVEL)",
    )
    parser.add_argument(
        "--version", action="version", version=f"tasker-worker-python {__version__}"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.connect:
        print(
            "error: --connect ENDPOINT is required (or set TASKER_WORKER_ENDPOINT)", file=sys.stderr
        )
        return 2
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so `--handlers examples.python.x` works from the repo
    try:
        registry = load_handlers(args.handlers)
        worker = Worker(
            args.connect,
            registry,
            capacity=args.capacity,
            name=args.name,
            worker_id=args.worker_id,
            heartbeat_interval=args.heartbeat_interval,
            shutdown_grace=args.shutdown_grace,
        )
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.getLogger("tasker_worker").info(
        "worker %s connecting to %s with handlers %s (capacity %d)",
        worker.worker_id,
        args.connect,
        ", ".join(registry.handler_classes()),
        worker.capacity,
    )
    try:
        worker.run()
    except HelloRejected as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
