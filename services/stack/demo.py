"""`switchyard demo`: a few requests of each route against a running router, with latencies.

The texts are each task's sample queries (`services.stack.samples`): two the first batch run
cached, a case and spacing variant of one of them (the same cache entry), and two uncached
ones, which the student on Triton answers.
"""

import time
from dataclasses import dataclass

from router.client import RouterClient, TlsConfig
from services.contracts.build_layout import BuildLayout
from services.stack.samples import sample_queries

__all__ = ["DemoAnswer", "run_demo"]


@dataclass(frozen=True)
class DemoAnswer:
    task: str
    text: str
    label: str
    score: float
    route: str
    server_ms: float
    client_ms: float


def _requests(layout: BuildLayout, task: str) -> list[str]:
    samples = sample_queries(layout, task)
    cached = samples.cached[:2]
    # A case and spacing variant of a cached query hits the same cache entry.
    return [*cached, "  " + cached[0].upper() + "  ", *samples.unseen[:2]]


def run_demo(
    address: str, layout: BuildLayout, timeout_s: float, tls: TlsConfig | None = None
) -> list[DemoAnswer]:
    """Every task the router serves and the build holds. RequestError when the router
    refuses a request; OSError when the build lacks a task's test split."""
    built = layout.read_report()
    answers = []
    with RouterClient(address, tls=tls, timeout_s=timeout_s) as client:
        for task in [info.task for info in client.list_tasks()]:
            if built is None or task not in built.tasks:
                continue
            for text in _requests(layout, task):
                started = time.perf_counter()
                answer = client.predict(task, text)
                answers.append(
                    DemoAnswer(
                        task=task,
                        text=text,
                        label=answer.label,
                        score=answer.score,
                        route=answer.route.value,
                        server_ms=answer.server_latency_ms,
                        client_ms=(time.perf_counter() - started) * 1000,
                    )
                )
    return answers
