"""Background traffic to a router that records the outcome of every request.

Clients run on one asyncio loop in a thread of their own, so a scenario can break servers in
the foreground while requests keep flowing. The load is `bench.load`'s generator: `clients`
back to back (closed loop, with an optional pause between requests), or requests starting
at a fixed `rate` (open loop, each timed from when it was due).
"""

import asyncio
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from bench.load import LoadGenerator, Overloaded, Sample
from router.client import AsyncRouterClient, Policy, Prediction, RequestError

__all__ = ["Outcome", "Traffic", "TrafficPlan"]


@dataclass(frozen=True)
class Outcome:
    """One request: when it was due, started and ended (time.monotonic), what came back."""

    started: float
    ended: float
    code: str
    details: str = ""
    routes: tuple[str, ...] = ()
    generations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    due: float | None = None

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def seconds(self) -> float:
        """From when the request was due (open loop) or sent (closed loop) to its answer."""
        return self.ended - (self.started if self.due is None else self.due)

    @classmethod
    def of(cls, sample: Sample[list[Prediction]], texts: tuple[str, ...]) -> "Outcome":
        started, ended, due = sample.started, sample.ended, sample.due
        error = sample.error
        if isinstance(error, RequestError):
            return cls(started, ended, error.code.name, error.details, texts=texts, due=due)
        if isinstance(error, Overloaded):
            return cls(started, ended, "RESOURCE_EXHAUSTED", "client", texts=texts, due=due)
        if error is not None:
            return cls(started, ended, "CLIENT_ERROR", repr(error), texts=texts, due=due)
        answers = sample.result or []
        return cls(
            started,
            ended,
            "OK",
            due=due,
            routes=tuple(answer.route.value for answer in answers),
            generations=tuple(answer.cache_generation for answer in answers),
            labels=tuple(answer.label for answer in answers),
            versions=tuple(answer.model_version for answer in answers),
            texts=texts,
        )


@dataclass(frozen=True)
class TrafficPlan:
    task: str
    texts: Sequence[str]
    batch: int = 1
    clients: int = 4
    rate: float | None = None
    pause_s: float = 0.0
    timeout_s: float | None = 5.0
    policy: Policy = Policy.AUTO
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
        texts = itertools.cycle(plan.texts)
        # Which texts each request sends, decided before it is sent: index -> texts.
        self._batches = (tuple(next(texts) for _ in range(plan.batch)) for _ in itertools.count())
        self._sent: dict[int, tuple[str, ...]] = {}
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

    def _record(self, sample: Sample[list[Prediction]]) -> None:
        outcome = Outcome.of(sample, self._sent.pop(sample.index, ()))
        with self._state.lock:
            self._state.outcomes.append(outcome)

    async def _main(self) -> None:
        plan = self._plan
        # No retries: the scenarios count what the router itself answered.
        async with AsyncRouterClient(self._address, timeout_s=plan.timeout_s, retries=0) as client:

            async def one(index: int) -> list[Prediction]:
                texts = self._sent[index] = next(self._batches)
                if plan.batch == 1:
                    return [await client.predict(plan.task, texts[0], policy=plan.policy)]
                return await client.predict_batch(plan.task, texts, policy=plan.policy)

            generator = LoadGenerator(one, self._record)
            self._ready.set()
            if plan.rate is None:
                await generator.closed_loop(plan.clients, self._sending.is_set, plan.pause_s)
            else:
                await generator.open_loop(plan.rate, self._sending.is_set, plan.max_outstanding)
