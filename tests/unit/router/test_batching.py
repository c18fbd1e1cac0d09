"""The model route's call batcher: concurrent texts share calls, never more than the slots
allow, each caller keeps its own deadline and gets its own answers."""

import asyncio

import pytest

from router.batching import CallBatcher


class Calls:
    """A call that records what it carried and blocks until released (when gated)."""

    def __init__(self, gated: bool = False, fail_on: str = "") -> None:
        self.carried: list[list[str]] = []
        self.budgets: list[float] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.fail_on = fail_on

    async def __call__(self, items: list[str], budget: float) -> list[str]:
        self.carried.append(items)
        self.budgets.append(budget)
        await self.gate.wait()
        if self.fail_on and self.fail_on in items:
            raise RuntimeError(f"cannot answer {self.fail_on}")
        return [item.upper() for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_request_leaves_at_once() -> None:
    async def scenario() -> None:
        calls = Calls()
        batcher = CallBatcher(calls, max_items=8, max_in_flight=lambda: 2)
        assert await batcher.submit(["a", "b"], 1.0) == ["A", "B"]
        assert calls.carried == [["a", "b"]]

    asyncio.run(scenario())


def test_texts_that_come_while_every_slot_is_busy_share_the_next_call() -> None:
    async def scenario() -> None:
        calls = Calls(gated=True)
        batcher = CallBatcher(calls, max_items=8, max_in_flight=lambda: 1)
        first = asyncio.create_task(batcher.submit(["first"], 1.0))
        await settle()
        waiting = [asyncio.create_task(batcher.submit([f"t{i}"], 1.0)) for i in range(5)]
        await settle()
        assert calls.carried == [["first"]]  # one slot: the rest wait
        calls.gate.set()
        assert await first == ["FIRST"]
        assert [await task for task in waiting] == [[f"T{i}"] for i in range(5)]
        assert calls.carried == [["first"], [f"t{i}" for i in range(5)]]
        assert batcher.calls == 2

    asyncio.run(scenario())


def test_no_call_carries_more_than_max_items_and_answers_keep_their_order() -> None:
    async def scenario() -> None:
        calls = Calls()
        batcher = CallBatcher(calls, max_items=4, max_in_flight=lambda: 8)
        items = [f"x{i}" for i in range(10)]
        assert await batcher.submit(items, 1.0) == [item.upper() for item in items]
        assert [len(carried) for carried in calls.carried] == [4, 4, 2]

    asyncio.run(scenario())


def test_in_flight_calls_never_exceed_the_slots() -> None:
    async def scenario() -> None:
        open_calls = 0
        most = 0

        async def call(items: list[str], budget: float) -> list[str]:
            nonlocal open_calls, most
            open_calls += 1
            most = max(most, open_calls)
            await asyncio.sleep(0.005)
            open_calls -= 1
            return items

        batcher = CallBatcher(call, max_items=3, max_in_flight=lambda: 2)
        answers = await asyncio.gather(*(batcher.submit([str(i)], 1.0) for i in range(40)))
        assert answers == [[str(i)] for i in range(40)]
        assert most == 2
        assert batcher.calls < 40  # shared

    asyncio.run(scenario())


def test_a_caller_that_gave_up_is_left_out_and_the_others_are_answered() -> None:
    async def scenario() -> None:
        calls = Calls(gated=True)
        batcher = CallBatcher(calls, max_items=8, max_in_flight=lambda: 1)
        first = asyncio.create_task(batcher.submit(["first"], 1.0))
        await settle()
        impatient = asyncio.create_task(asyncio.wait_for(batcher.submit(["gone"], 0.01), 0.01))
        patient = asyncio.create_task(batcher.submit(["kept"], 2.0))
        with pytest.raises(TimeoutError):
            await impatient
        calls.gate.set()
        await first
        assert await patient == ["KEPT"]
        assert calls.carried == [["first"], ["kept"]]
        # The shared call gets the longest time its callers have left.
        assert calls.budgets[1] > 1.5

    asyncio.run(scenario())


def test_a_failed_call_fails_its_callers_only() -> None:
    async def scenario() -> None:
        calls = Calls(gated=True, fail_on="bad")
        batcher = CallBatcher(calls, max_items=2, max_in_flight=lambda: 1)
        first = asyncio.create_task(batcher.submit(["ok"], 1.0))
        await settle()
        # Two calls wait: ["bad", "mate"] and ["fine"].
        bad = asyncio.create_task(batcher.submit(["bad"], 1.0))
        mate = asyncio.create_task(batcher.submit(["mate"], 1.0))
        fine = asyncio.create_task(batcher.submit(["fine"], 1.0))
        await settle()
        calls.gate.set()
        assert await first == ["OK"]
        for failed in (bad, mate):
            with pytest.raises(RuntimeError, match="cannot answer bad"):
                await failed
        assert await fine == ["FINE"]
        assert calls.carried == [["ok"], ["bad", "mate"], ["fine"]]

    asyncio.run(scenario())


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        CallBatcher(Calls(), max_items=0, max_in_flight=lambda: 1)
