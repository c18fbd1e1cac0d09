"""Load generators: closed loop (N clients back to back) and open loop (fixed arrival rate).

The open loop times each request from when it was due, not from when it was sent, so a
stalled server shows up as latency instead of as fewer requests (no coordinated omission).
Both stop by themselves after their duration; the open loop then waits at most `drain_s` for
requests still in flight and counts those as errors.
"""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Call", "Run", "closed_loop", "open_loop"]

Call = Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class Run:
    latencies_ms: list[float]
    seconds: float
    errors: int

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "calls": len(self.latencies_ms),
            "errors": self.errors,
            "throughput_per_s": self.throughput,
            "p50_ms": statistics.median(self.latencies_ms) if self.latencies_ms else float("nan"),
            "p95_ms": self.percentile(0.95),
            "p99_ms": self.percentile(0.99),
        }


async def closed_loop(call: Call, concurrency: int, seconds: float, warmup: int = 20) -> Run:
    for index in range(warmup):
        await call(index)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        index = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call(index)
            except Exception:
                errors += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            index += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return Run(latencies, time.perf_counter() - started, errors)


async def open_loop(call: Call, rate: float, seconds: float, drain_s: float = 5.0) -> Run:
    latencies: list[float] = []
    errors = 0

    async def one(index: int, due: float) -> None:
        nonlocal errors
        try:
            await call(index)
        except Exception:
            errors += 1
        else:
            latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    started = time.perf_counter()
    for index in range(int(rate * seconds)):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    return Run(latencies, seconds, errors + len(pending))
