"""Background traffic to a router that records the outcome of every request.

Clients run on one asyncio loop in a thread of their own, so a scenario can break servers in
the foreground while requests keep flowing. Either `clients` send back to back (closed loop,
with an optional pause between requests) or requests start at a fixed `rate` (open loop).
"""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from router._generated.switchyard.v1 import router_pb2

__all__ = ["Outcome", "Traffic", "TrafficPlan"]

_ROUTES = {router_pb2.ROUTE_CACHE: "cache", router_pb2.ROUTE_MODEL: "model"}
_Call = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (time.monotonic), and what came back."""

    started: float
    ended: float
    code: str
    details: str = ""
    routes: tuple[str, ...] = ()
    generations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class TrafficPlan:
    task: str
    texts: Sequence[str]
    batch: int = 1
    clients: int = 4
    rate: float | None = None
    pause_s: float = 0.0
    timeout_s: float | None = 5.0
    policy: router_pb2.RoutePolicy = router_pb2.ROUTE_POLICY_AUTO
    max_outstanding: int = 256


@dataclass
class _State:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Traffic:
    """Send `plan`'s requests to `address` from start() until stop(), recording each."""

    def __init__(self, address: str, plan: TrafficPlan) -> None:
        self._address = address
        self._plan = plan
        self._state = _State()
        self._texts = itertools.cycle(plan.texts)
        self._sending = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._ready = threading.Event()

    def start(self) -> "Traffic":
        self._sending.set()
        self._thread.start()
        self._ready.wait(10)
        return self

    def hold(self) -> None:
        """Stop starting requests (those in flight finish); as a client told NOT_SERVING."""
        self._sending.clear()

    def stop(self, drain_s: float = 30.0) -> list[Outcome]:
        self._sending.clear()
        self._thread.join(drain_s)
        if self._thread.is_alive():
            raise RuntimeError(f"traffic still in flight {drain_s:.0f} s after stop")
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        with self._state.lock:
            return list(self._state.outcomes)

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread.is_alive():
            self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        plan = self._plan
        async with grpc.aio.insecure_channel(self._address) as channel:
            predict = channel.unary_unary(
                "/switchyard.v1.Router/Predict",
                request_serializer=router_pb2.PredictRequest.SerializeToString,
                response_deserializer=router_pb2.PredictResponse.FromString,
            )
            predict_batch = channel.unary_unary(
                "/switchyard.v1.Router/PredictBatch",
                request_serializer=router_pb2.PredictBatchRequest.SerializeToString,
                response_deserializer=router_pb2.PredictBatchResponse.FromString,
            )

            async def one() -> None:
                texts = tuple(next(self._texts) for _ in range(plan.batch))
                started = time.monotonic()
                try:
                    if plan.batch == 1:
                        request = router_pb2.PredictRequest(
                            task=plan.task, text=texts[0], policy=plan.policy
                        )
                        results = [await predict(request, timeout=plan.timeout_s)]
                    else:
                        batch_request = router_pb2.PredictBatchRequest(
                            task=plan.task, texts=texts, policy=plan.policy
                        )
                        reply = await predict_batch(batch_request, timeout=plan.timeout_s)
                        results = list(reply.results)
                except grpc.aio.AioRpcError as exc:
                    outcome = Outcome(
                        started, time.monotonic(), exc.code().name, exc.details() or "", texts=texts
                    )
                else:
                    outcome = Outcome(
                        started,
                        time.monotonic(),
                        "OK",
                        routes=tuple(_ROUTES.get(r.route, "?") for r in results),
                        generations=tuple(r.cache_generation for r in results),
                        labels=tuple(r.label for r in results),
                        texts=texts,
                    )
                with self._state.lock:
                    self._state.outcomes.append(outcome)

            self._ready.set()
            if plan.rate is None:
                await asyncio.gather(*(self._client(one) for _ in range(plan.clients)))
            else:
                await self._fixed_rate(one, plan.rate, plan.max_outstanding)

    async def _client(self, one: _Call) -> None:
        while self._sending.is_set():
            await one()
            if self._plan.pause_s:
                await asyncio.sleep(self._plan.pause_s)

    async def _fixed_rate(self, one: _Call, rate: float, max_outstanding: int) -> None:
        """Start one request every 1/rate s; beyond `max_outstanding` in flight, skip a slot
        and count it as a client-side RESOURCE_EXHAUSTED, so overload shows as errors."""
        in_flight: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        for index in itertools.count():
            if not self._sending.is_set():
                break
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_outstanding:
                now = time.monotonic()
                with self._state.lock:
                    self._state.outcomes.append(Outcome(now, now, "RESOURCE_EXHAUSTED", "client"))
                continue
            task = asyncio.create_task(one())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
