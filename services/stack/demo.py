"""`switchyard demo`: a few requests of each route against a running router, with latencies."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from router.client import RouterClient, TlsConfig

__all__ = ["DemoAnswer", "run_demo"]

# Texts no sample query file holds, so the router must ask the student on Triton.
_UNSEEN = {
    "topic": ["The chip maker unveiled a faster graphics card", "Voters head to the polls today"],
    "sentiment": ["What a lovely surprise this morning", "The train was late and crowded again"],
}


@dataclass(frozen=True)
class DemoAnswer:
    task: str
    text: str
    label: str
    score: float
    route: str
    server_ms: float
    client_ms: float


def _requests(queries_dir: Path, task: str) -> list[str]:
    lines = (queries_dir / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
    cached = [json.loads(line)["text"] for line in lines[:2]]
    # A case and spacing variant of a cached query hits the same cache entry.
    return [*cached, "  " + cached[0].upper() + "  ", *_UNSEEN[task]]


def run_demo(
    address: str, queries_dir: Path, timeout_s: float, tls: TlsConfig | None = None
) -> list[DemoAnswer]:
    """RequestError when the router refuses a request."""
    answers = []
    with RouterClient(address, tls=tls, timeout_s=timeout_s) as client:
        for task in [info.task for info in client.list_tasks()]:
            if task not in _UNSEEN:
                continue
            for text in _requests(queries_dir, task):
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
