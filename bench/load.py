"""The one load generator, used by `switchyard bench` and by the reliability scenarios and soak.

Closed loop: N clients, each sending its next request when the last one ended (optionally
after a pause). Open loop: requests start at a fixed rate whatever the server does, and each
is timed from when it was due, not from when it was sent, so a stalled server shows up as
latency instead of as fewer requests (no coordinated omission). Every request is recorded
as a `Sample`, with its result or its error.
"""

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Call", "LoadGenerator", "Overloaded", "Run", "Sample", "closed_loop", "open_loop"]

Result = TypeVar("Result")
Call = Callable[[int], Awaitable[Result]]


class Overloaded(Exception):
    """The open loop skipped a request: too many were in flight already."""


@dataclass(frozen=True)
class Sample(Generic[Result]):
    """One request: when it was due, started and ended (time.monotonic), and how it went."""

    index: int
    due: float
    started: float
    ended: float
    result: Result | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency_s(self) -> float:
        """From when the request was due, so time spent queued behind others counts."""
        return self.ended - self.due


class LoadGenerator(Generic[Result]):
    """Sends `call(index)` on the running event loop and hands each Sample to `record`.
    Both loops run while `running()` says so, then wait for the requests in flight."""

    def __init__(self, call: Call[Result], record: Callable[[Sample[Result]], None]) -> None:
        self._call = call
        self._record = record
        self._indices = itertools.count()
        self._started: dict[int, float] = {}

    async def _one(self, due: float, index: int | None = None) -> None:
        index = next(self._indices) if index is None else index
        started = self._started[index] = time.monotonic()
        try:
            result = await self._call(index)
        except Exception as exc:
            self._record(Sample(index, due, started, time.monotonic(), error=exc))
        else:
            self._record(Sample(index, due, started, time.monotonic(), result=result))
        finally:
            self._started.pop(index, None)

    async def closed_loop(
        self, clients: int, running: Callable[[], bool], pause_s: float = 0.0
    ) -> None:
        async def client() -> None:
            while running():
                await self._one(time.monotonic())
                if pause_s:
                    await asyncio.sleep(pause_s)

        await asyncio.gather(*(client() for _ in range(clients)))

    async def open_loop(
        self,
        rate: float,
        running: Callable[[], bool],
        max_outstanding: int | None = None,
        drain_s: float | None = None,
        seconds: float | None = None,
    ) -> None:
        """One request every 1/rate s while `running()`, and with `seconds` every slot due
        within that time: a client that falls behind still sends them all, late. Beyond
        `max_outstanding` in flight a slot is skipped and recorded as Overloaded, so overload
        shows as errors; requests still in flight `drain_s` after the loop ends are cancelled
        and recorded as TimeoutError."""
        in_flight: dict[asyncio.Task[None], tuple[int, float]] = {}
        started = time.monotonic()
        for slot in itertools.count():
            due = started + slot / rate
            if not running() or (seconds is not None and due >= started + seconds):
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if max_outstanding is not None and len(in_flight) >= max_outstanding:
                now = time.monotonic()
                skipped = Overloaded(f"{len(in_flight)} requests in flight")
                self._record(Sample(next(self._indices), due, now, now, error=skipped))
                continue
            index = next(self._indices)
            task = asyncio.create_task(self._one(due, index))
            in_flight[task] = (index, due)
            task.add_done_callback(in_flight.pop)
        if not in_flight:
            return
        _, pending = await asyncio.wait(list(in_flight), timeout=drain_s)
        late = {task: (*in_flight[task], self._started.get(in_flight[task][0])) for task in pending}
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for index, due, began in late.values():
            error = TimeoutError(f"no answer {drain_s} s after the load ended")
            self._record(Sample(index, due, began or due, time.monotonic(), error=error))


@dataclass(frozen=True)
class Run:
    latencies_ms: list[float]
    seconds: float
    errors: int

    @classmethod
    def of(cls, samples: Sequence[Sample[Any]], seconds: float) -> "Run":
        latencies = [sample.latency_s * 1000 for sample in samples if sample.ok]
        return cls(latencies, seconds, sum(not sample.ok for sample in samples))

    @classmethod
    def merged(cls, runs: Sequence["Run"]) -> "Run":
        """One run of several, as if back to back: their calls, seconds and errors summed."""
        latencies = [latency for run in runs for latency in run.latencies_ms]
        return cls(latencies, sum(run.seconds for run in runs), sum(run.errors for run in runs))

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


def _until(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() < deadline


async def closed_loop(
    call: Call[object], concurrency: int, seconds: float, warmup: int = 20
) -> Run:
    """`concurrency` clients back to back for `seconds`, after `warmup` sequential calls."""
    for index in range(warmup):
        await call(index)
    samples: list[Sample[object]] = []
    started = time.monotonic()
    await LoadGenerator(call, samples.append).closed_loop(concurrency, _until(seconds))
    return Run.of(samples, time.monotonic() - started)


async def open_loop(call: Call[object], rate: float, seconds: float, drain_s: float = 5.0) -> Run:
    """`rate` requests per second for `seconds`; what is unanswered `drain_s` later fails."""
    samples: list[Sample[object]] = []
    generator = LoadGenerator(call, samples.append)
    await generator.open_loop(rate, lambda: True, drain_s=drain_s, seconds=seconds)
    return Run.of(samples, seconds)
