"""Concurrent requests' texts for one model version, merged into shared Triton calls.

Every call costs the router a tritonclient round trip and Triton a gRPC request and a hop to
its backend, whatever it holds; under load those fixed costs, not the student's compute,
bound the model route. So a batcher keeps at most `max_in_flight` calls going at once: a text
that arrives while a slot is free leaves at once (a lone request never waits for company),
and texts that arrive while every slot is busy wait and leave together, up to `max_items` a
call, when the next slot frees. Each caller keeps its own deadline: one that gives up leaves
its texts out of the next call, or the call in flight to the others.
"""

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["CallBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiter(Generic[Item, Result]):
    items: list[Item]
    deadline: float  # the event loop's clock
    answer: "asyncio.Future[list[Result]]"
    # The caller's context: a call runs in its first caller's (its trace span, so the call's
    # own span is that request's child).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class CallBatcher(Generic[Item, Result]):
    def __init__(
        self,
        call: Callable[[list[Item], float], Awaitable[list[Result]]],
        max_items: int,
        max_in_flight: Callable[[], int],
    ) -> None:
        """`call(items, timeout_s)` returns one result per item; `max_in_flight()` is read at
        every dispatch, so it can follow the number of replicas."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self._call = call
        self._max_items = max_items
        self._max_in_flight = max_in_flight
        self._pending: deque[_Waiter[Item, Result]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.calls = 0
        """Calls made so far (a test reads it)."""

    async def submit(self, items: list[Item], timeout_s: float) -> list[Result]:
        """One result per item, from calls shared with other callers; the caller bounds its
        own wait (the call itself is given the longest time any of its callers has left)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiters = [
            _Waiter[Item, Result](
                items[start : start + self._max_items], deadline, loop.create_future()
            )
            for start in range(0, len(items), self._max_items)
        ]
        self._pending.extend(waiters)
        self._dispatch()
        try:
            chunks = await asyncio.gather(*(waiter.answer for waiter in waiters))
        finally:
            for waiter in waiters:
                if not waiter.answer.done():
                    waiter.answer.cancel()  # left out of the next call
                elif not waiter.answer.cancelled():
                    waiter.answer.exception()  # retrieved: a failure after the first is known
        return [result for chunk in chunks for result in chunk]

    def _dispatch(self) -> None:
        while self._pending and len(self._in_flight) < max(1, self._max_in_flight()):
            batch: list[_Waiter[Item, Result]] = []
            count = 0
            while self._pending and count + len(self._pending[0].items) <= self._max_items:
                waiter = self._pending.popleft()
                if not waiter.answer.done():  # done: its caller gave up waiting
                    batch.append(waiter)
                    count += len(waiter.items)
            if batch:
                job = asyncio.create_task(self._run(batch), context=batch[0].context)
                self._in_flight.add(job)
                job.add_done_callback(self._finished)

    def _finished(self, job: "asyncio.Task[None]") -> None:
        self._in_flight.discard(job)
        self._dispatch()

    async def _run(self, batch: list[_Waiter[Item, Result]]) -> None:
        self.calls += 1
        loop = asyncio.get_running_loop()
        budget = max(waiter.deadline for waiter in batch) - loop.time()
        try:
            results = await self._call([item for waiter in batch for item in waiter.items], budget)
        except asyncio.CancelledError:  # the router is closing
            for waiter in batch:
                waiter.answer.cancel()
            raise
        except Exception as exc:  # every caller of the call gets its failure
            for waiter in batch:
                if not waiter.answer.done():
                    waiter.answer.set_exception(exc)
            return
        offset = 0
        for waiter in batch:
            if not waiter.answer.done():
                waiter.answer.set_result(results[offset : offset + len(waiter.items)])
            offset += len(waiter.items)
