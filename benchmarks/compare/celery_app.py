"""The Celery side of benchmarks/compare: one no-op task and the two workflow shapes.

The broker and the result backend are the Redis server that compare.py starts
(``BENCH_REDIS_URL``). The worker is started by compare.py as
``celery -A celery_app worker --pool prefork --concurrency 2``.

Each step returns its own name; a step that follows others receives their results as
Celery passes them (the parent's result in a chain, the list of the group's results in
a chord), the way a Tasker step sees its ancestors' outputs. The last step checks what
it received, so a returned "d" (diamond) or "c" (chain) means every step ran in order.
"""

import os

from celery import Celery, chain, group

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_compare", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Everything else is Celery's default (prefetch multiplier 4, early acks, results kept
    # a day): the configuration a user meets first.
)


@app.task(name="bench.step")
def step(*parents, name, expect=None):
    """A no-op step. ``expect``: what it must have received from its parents."""
    if expect is not None:
        got = sorted(parents[0]) if parents and isinstance(parents[0], list) else list(parents)
        if got != expect:
            return f"{name}: expected {expect}, got {got}"
    return name


def diamond():
    """a → (b, c) → d: a chain with a group in the middle, which Celery runs as a chord."""
    return chain(
        step.s(name="a"),
        group(step.s(name="b", expect=["a"]), step.s(name="c", expect=["a"])),
        step.s(name="d", expect=["b", "c"]),
    )


def chain3():
    """a → b → c."""
    return chain(
        step.s(name="a"),
        step.s(name="b", expect=["a"]),
        step.s(name="c", expect=["b"]),
    )


# The workloads: canvas builder and the value its result must have.
WORKLOADS = {"diamond": (diamond, "d"), "chain": (chain3, "c")}
