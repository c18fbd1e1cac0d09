"""The load generator against fake calls: concurrency, schedule, overload, drain, errors, runs."""

import asyncio
import itertools
import math
import time
from collections.abc import Callable

import pytest

from bench.load import LoadGenerator, Overloaded, Run, Sample, closed_loop, open_loop

pytestmark = pytest.mark.timeout(60)


def first(count: int) -> Callable[[], bool]:
    """A `running` that says yes `count` times: a loop of exactly that many slots."""
    remaining = iter(range(count))
    return lambda: next(remaining, None) is not None


def for_seconds(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() < deadline


class FakeServer:
    """An async call that sleeps `seconds` (or `seconds(index)`) and counts what is in flight."""

    def __init__(self, seconds: float | Callable[[int], float] = 0.01) -> None:
        self.seconds = seconds if callable(seconds) else lambda index: seconds
        self.in_flight = 0
        self.most_in_flight = 0
        self.indices: list[int] = []
        self.cancelled = 0

    async def __call__(self, index: int) -> str:
        self.indices.append(index)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds(index))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return f"answer {index}"


def test_closed_loop_keeps_at_most_one_call_in_flight_per_client() -> None:
    server = FakeServer(0.01)
    samples: list[Sample[str]] = []
    generator = LoadGenerator(server, samples.append)
    asyncio.run(generator.closed_loop(4, first(40)))
    assert server.most_in_flight == 4
    assert len(samples) == 40
    assert sorted(sample.index for sample in samples) == list(range(40))
    for sample in samples:
        assert sample.ok
        assert sample.result == f"answer {sample.index}"
        assert sample.due <= sample.started <= sample.ended
        assert sample.ended - sample.started >= 0.009
        # Nothing queues in a closed loop: the latency is the call's own time.
        assert sample.latency_s == pytest.approx(sample.ended - sample.started, abs=0.005)


def test_closed_loop_pauses_between_calls() -> None:
    counts = {}
    for pause_s in (0.0, 0.05):
        server = FakeServer(0.001)
        generator = LoadGenerator(server, lambda sample: None)
        asyncio.run(generator.closed_loop(1, for_seconds(0.3), pause_s=pause_s))
        counts[pause_s] = len(server.indices)
    assert counts[0.05] <= 7
    assert counts[0.0] >= 5 * counts[0.05]


def test_open_loop_starts_requests_on_schedule_whatever_the_answers_take() -> None:
    server = FakeServer(0.5)
    samples: list[Sample[str]] = []
    asyncio.run(LoadGenerator(server, samples.append).open_loop(50, first(10)))
    assert len(samples) == 10
    assert all(sample.ok for sample in samples)
    # Every request started before the first answer came back.
    assert max(sample.started for sample in samples) < min(sample.ended for sample in samples)
    assert server.most_in_flight == 10
    dues = sorted(sample.due for sample in samples)
    for earlier, later in itertools.pairwise(dues):
        assert later - earlier == pytest.approx(0.02, abs=1e-6)
    for sample in samples:
        assert sample.started - sample.due < 0.1
        assert sample.ended - sample.started >= 0.49


def test_open_loop_times_requests_from_when_they_were_due() -> None:
    # A call that holds the event loop for 0.2 s: later requests start late.
    def blocking(index: int) -> "asyncio.Future[int]":
        time.sleep(0.2)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(index)
        return future

    samples: list[Sample[int]] = []
    asyncio.run(LoadGenerator(blocking, samples.append).open_loop(20, first(3)))
    samples.sort(key=lambda sample: sample.due)
    assert [sample.ok for sample in samples] == [True, True, True]
    for sample in samples:
        assert sample.latency_s == sample.ended - sample.due
        assert sample.ended - sample.started < 0.35
    last = samples[-1]
    assert last.started - last.due > 0.15  # it waited behind the first ones
    assert last.latency_s >= 0.4  # and that wait counts: 0.1 s late due, 0.2 s + 0.2 s after
    assert last.latency_s > (last.ended - last.started) + 0.15


def test_open_loop_catches_up_on_the_slots_a_stall_missed() -> None:
    async def call(index: int) -> int:
        if index == 0:
            time.sleep(0.3)  # holds the event loop: slots 1 to 15 fall due meanwhile
        await asyncio.sleep(0.001)
        return index

    samples: list[Sample[int]] = []
    asyncio.run(LoadGenerator(call, samples.append).open_loop(50, first(25)))
    assert len(samples) == 25
    assert all(sample.ok for sample in samples)
    stall_ended = min(sample.ended for sample in samples)
    burst = [sample for sample in samples if sample.started - stall_ended < 0.05]
    assert len(burst) >= 10
    # Missed slots start at once, not one interval apart: the schedule is back on time.
    last = max(samples, key=lambda sample: sample.due)
    assert last.started - last.due < 0.1


def test_open_loop_records_slots_beyond_max_outstanding_as_overloaded() -> None:
    server = FakeServer(0.6)
    samples: list[Sample[object]] = []
    generator = LoadGenerator(server, samples.append)
    asyncio.run(generator.open_loop(100, first(20), max_outstanding=5))
    assert len(samples) == 20
    assert server.most_in_flight == 5
    answered = [sample for sample in samples if sample.ok]
    skipped = [sample for sample in samples if not sample.ok]
    assert len(answered) == 5
    assert len(skipped) == 15
    for sample in skipped:
        assert isinstance(sample.error, Overloaded)
        assert str(sample.error) == "5 requests in flight"
        assert sample.result is None
        assert sample.started == sample.ended
    assert Run.of(samples, 1.0).errors == 15


def test_open_loop_cancels_what_is_still_running_drain_s_after_it_ended() -> None:
    # Even requests answer quickly, odd ones not within the drain.
    server = FakeServer(lambda index: 0.01 if index % 2 == 0 else 30.0)
    samples: list[Sample[str]] = []

    async def main() -> tuple[float, int]:
        started = time.monotonic()
        await LoadGenerator(server, samples.append).open_loop(100, first(6), drain_s=0.2)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)  # the cancellations are delivered
        return elapsed, server.cancelled

    elapsed, cancelled = asyncio.run(main())
    assert 0.2 <= elapsed < 5
    assert cancelled == 3
    answered = [sample for sample in samples if sample.ok]
    late = [sample for sample in samples if not sample.ok]
    assert sorted(sample.result or "" for sample in answered) == [
        "answer 0",
        "answer 2",
        "answer 4",
    ]
    assert len(late) == 3
    # Each cancelled request keeps the index its call was given, and when it started.
    assert sorted(sample.index for sample in late) == [1, 3, 5]
    for sample in late:
        assert isinstance(sample.error, TimeoutError)
        assert "0.2 s after the load ended" in str(sample.error)
        assert sample.latency_s >= 0.2
        assert sample.due <= sample.started < sample.ended


class ServerError(Exception):
    pass


def test_errors_of_the_call_are_recorded_and_counted() -> None:
    async def call(index: int) -> int:
        await asyncio.sleep(0.001)
        if index % 3 == 0:
            raise ServerError(f"bad request {index}")
        return index

    samples: list[Sample[object]] = []
    asyncio.run(LoadGenerator(call, samples.append).closed_loop(1, first(9)))
    failed = [sample for sample in samples if not sample.ok]
    assert [sample.index for sample in failed] == [0, 3, 6]
    for sample in failed:
        assert isinstance(sample.error, ServerError)
        assert str(sample.error) == f"bad request {sample.index}"
        assert sample.result is None
    run = Run.of(samples, 1.0)
    assert run.errors == 3
    assert len(run.latencies_ms) == 6


def test_run_of_keeps_the_latency_of_answered_samples_in_ms() -> None:
    samples: list[Sample[object]] = [
        Sample(0, due=10.0, started=10.5, ended=11.0, result="a"),
        Sample(1, due=20.0, started=20.0, ended=20.25, result="b"),
        Sample(2, due=30.0, started=30.0, ended=35.0, error=RuntimeError("down")),
    ]
    run = Run.of(samples, 2.0)
    assert run.latencies_ms == [1000.0, 250.0]
    assert run.errors == 1
    assert run.seconds == 2.0
    assert run.throughput == 1.0


def test_run_summary() -> None:
    run = Run([float(ms) for ms in range(100, 0, -1)], seconds=4.0, errors=2)
    assert run.summary() == {
        "calls": 100,
        "errors": 2,
        "throughput_per_s": 25.0,
        "p50_ms": 50.5,
        "p95_ms": 96.0,
        "p99_ms": 100.0,
    }
    assert run.percentile(0.0) == 1.0
    assert run.percentile(1.0) == 100.0


def test_summary_of_a_run_without_answers() -> None:
    summary = Run([], seconds=0.0, errors=3).summary()
    assert (summary["calls"], summary["errors"], summary["throughput_per_s"]) == (0, 3, 0.0)
    assert all(math.isnan(summary[key]) for key in ("p50_ms", "p95_ms", "p99_ms"))


def test_closed_loop_helper_warms_up_then_runs_concurrently() -> None:
    server = FakeServer(0.01)
    run = asyncio.run(closed_loop(server, concurrency=4, seconds=0.5, warmup=3))
    assert server.indices[:3] == [0, 1, 2]
    assert server.most_in_flight == 4
    assert run.errors == 0
    assert 0.5 <= run.seconds < 5
    # Four clients of 10 ms calls: at most 400 per second, and not far below it.
    assert 40 < run.throughput <= 400
    assert 10 <= run.summary()["p50_ms"] < 200
    assert len(run.latencies_ms) == len(server.indices) - 3


def test_open_loop_helper_runs_at_the_rate() -> None:
    server = FakeServer(0.01)
    run = asyncio.run(open_loop(server, rate=100, seconds=0.5))
    assert run.errors == 0
    assert run.seconds == 0.5
    assert 50 <= run.throughput <= 110
    assert 10 <= run.summary()["p50_ms"] < 200


def test_open_loop_helper_sends_every_slot_of_its_time_even_when_it_falls_behind() -> None:
    """A client stalled for most of the run still offers rate x seconds requests, late."""
    stalled = False

    async def call(index: int) -> int:
        nonlocal stalled
        if not stalled:
            stalled = True
            time.sleep(0.3)  # blocks the loop: every slot of the run is now overdue
        return index

    run = asyncio.run(open_loop(call, rate=100, seconds=0.2))
    assert len(run.latencies_ms) == 20
    assert max(run.latencies_ms) >= 100


def test_open_loop_helper_fails_what_is_unanswered_after_the_drain() -> None:
    server = FakeServer(30.0)
    started = time.monotonic()
    run = asyncio.run(open_loop(server, rate=50, seconds=0.2, drain_s=0.1))
    assert time.monotonic() - started < 5
    assert run.throughput == 0.0
    assert run.errors == len(server.indices) > 0


def test_merged_runs_add_up_as_if_back_to_back() -> None:
    merged = Run.merged([Run([1.0, 3.0], 2.0, 1), Run([2.0], 1.0, 0)])
    assert sorted(merged.latencies_ms) == [1.0, 2.0, 3.0]
    assert (merged.seconds, merged.errors) == (3.0, 1)
    assert merged.throughput == 1.0
    assert merged.summary()["p50_ms"] == 2.0
