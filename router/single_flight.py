"""Concurrent asks for the same key share one computation (Go's singleflight, per key).

On the model route, N requests for the same text of the same model version at once make one
Triton call: the first asks for it, the others wait for its answer within their own
deadlines. When that call fails, the waiters ask again (the first of them for all), so one
request's short deadline or failure never becomes another's.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from router.errors import DeadlineExceeded

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._in_flight: dict[K, asyncio.Future[V]] = {}

    async def many(
        self,
        keys: Sequence[K],
        compute: Callable[[list[int]], Awaitable[list[V]]],
        deadline: float | None,
    ) -> tuple[list[V], int]:
        """The value of each key, and how many came from another caller's computation.
        `compute(indices)` computes the keys at those positions, in that order; waiting for
        another caller's computation ends by `deadline` (time.monotonic(); None: no limit)."""
        loop = asyncio.get_running_loop()
        values: dict[int, V] = {}
        leading: list[int] = []
        mine: dict[K, asyncio.Future[V]] = {}
        # (position, future, whether another caller computes it)
        waiting: list[tuple[int, asyncio.Future[V], bool]] = []
        for index, key in enumerate(keys):
            future = mine.get(key) or self._in_flight.get(key)
            if future is not None:
                waiting.append((index, future, key not in mine))
                continue
            future = loop.create_future()
            mine[key] = self._in_flight[key] = future
            leading.append(index)
        if leading:
            try:
                computed = await compute(leading)
            except BaseException:
                # Waiters see a cancelled future and ask for themselves.
                self._settle(mine, None)
                raise
            self._settle(mine, {keys[i]: value for i, value in zip(leading, computed, strict=True)})
            values.update(zip(leading, computed, strict=True))
        orphans: list[int] = []
        shared = 0
        for index, future, foreign in waiting:
            try:
                # The loop's clock is time.monotonic(), the deadline's.
                async with asyncio.timeout_at(deadline):
                    values[index] = await asyncio.shield(future)
                shared += foreign
            except TimeoutError:
                raise DeadlineExceeded(
                    "the request's deadline passed while the same text was being answered"
                ) from None
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this request itself was cancelled
                orphans.append(index)
        if orphans:
            # Asked again, and again shared: the first waiter to get here computes for all.
            retried, shared_again = await self.many(
                [keys[i] for i in orphans],
                lambda positions: compute([orphans[p] for p in positions]),
                deadline,
            )
            values.update(zip(orphans, retried, strict=True))
            shared += shared_again
        return [values[index] for index in range(len(keys))], shared

    def _settle(self, mine: dict[K, asyncio.Future[V]], results: dict[K, V] | None) -> None:
        for key, future in mine.items():
            if self._in_flight.get(key) is future:
                del self._in_flight[key]
            if results is None:
                future.cancel()
            else:
                future.set_result(results[key])
