"""The routing decision, top to bottom: validate, look up the cache, ask the model for misses.

No gRPC types here: `router.servicer` converts messages to these calls and errors to codes.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from opentelemetry import trace

from router.answers import Answer, ModelAnswer, Policy, Route, TaskInfo
from router.cache import PredictionCache
from router.errors import CacheMiss, DeadlineExceeded, DependencyUnavailable, InvalidRequest
from router.metrics import RouterMetrics
from router.rollout import Serving, StudentModel
from router.settings import RouterSettings, TaskSettings
from router.single_flight import SingleFlight
from router.top_misses import MissCounter
from router.tracing import NO_TRACER
from services.contracts.cache_schema import CachedPrediction
from services.contracts.quality_schema import QualitySample

__all__ = ["Router", "Student"]

_log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=StudentModel)


class Student(Protocol[ModelT]):
    """The model route: `router.model.StudentClient` on Triton, or a stand-in in tests."""

    def serving(self, name: str) -> Serving[ModelT]:
        """The versions that answer the model's traffic now."""
        ...

    def problems(self, name: str) -> list[str]:
        """Why versions the model should serve do not, one line each."""
        ...

    async def classify(
        self, model: ModelT, texts: Sequence[str], timeout_s: float
    ) -> list[ModelAnswer]:
        """DeadlineExceeded or DependencyUnavailable when the model cannot answer in time."""
        ...


class Router:
    def __init__(
        self,
        settings: RouterSettings,
        tasks: dict[str, TaskSettings],
        cache: PredictionCache,
        student: Student[Any],
        metrics: RouterMetrics,
        tracer: trace.Tracer = NO_TRACER,
    ) -> None:
        self._settings = settings
        self._tracer = tracer
        self._tasks = dict(tasks)
        self._cache = cache
        self._student = student
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()
        self._shadows_in_flight = 0
        # Concurrent asks for the same text of the same model version share one call.
        self._flights: SingleFlight[tuple[str, str, str], ModelAnswer] = SingleFlight()
        self.miss_counts = MissCounter(settings.top_misses_capacity)
        """Uncached texts, for the server to flush to Redis."""

    @property
    def tasks(self) -> dict[str, TaskSettings]:
        return self._tasks

    @property
    def metrics(self) -> RouterMetrics:
        return self._metrics

    def use_tasks(self, tasks: dict[str, TaskSettings]) -> None:
        """Serve this task set from the next request on; every model it names is loaded.
        One assignment: a request sees either the old set or the new one."""
        self._tasks = dict(tasks)

    def serves(self, task: str) -> bool:
        return task in self._tasks

    def describe_tasks(self) -> list[TaskInfo]:
        """Every task, in name order, with the version and generation that answer it now."""
        described = []
        for name, settings in sorted(self._tasks.items()):
            serving = self._student.serving(settings.model)
            described.append(
                TaskInfo(
                    task=name,
                    labels=list(serving.stable.labels),
                    model=serving.stable.name,
                    model_version=serving.stable.version,
                    cache_generation=self._cache.generation(settings.cache_namespace) or "",
                    confidence_threshold=settings.confidence_threshold,
                    max_text_length=settings.max_text_length,
                    candidate_version=""
                    if serving.candidate is None
                    else serving.candidate.version,
                    canary_weight=serving.weight,
                    shadow_share=serving.shadow,
                    version_problems=self._student.problems(settings.model),
                )
            )
        return described

    def task_settings(self, task: str) -> TaskSettings:
        if task not in self._tasks:
            known = ", ".join(sorted(self._tasks))
            # Clipped: the status details travel in a header, and a name can be megabytes.
            shown = task if len(task) <= 64 else f"{task[:64]}..."
            raise InvalidRequest(f"unknown task {shown!r}; known tasks: {known}")
        return self._tasks[task]

    def _validate(self, task: str, texts: Sequence[str], min_confidence: float) -> TaskSettings:
        settings = self.task_settings(task)
        if not texts:
            raise InvalidRequest("no text given")
        if len(texts) > self._settings.max_batch_texts:
            raise InvalidRequest(
                f"{len(texts)} texts in one request; the limit is {self._settings.max_batch_texts}"
            )
        for index, text in enumerate(texts):
            where = f"text {index}" if len(texts) > 1 else "text"
            if not text.strip():
                raise InvalidRequest(f"{where} is empty")
            if len(text) > settings.max_text_length:
                raise InvalidRequest(
                    f"{where} has {len(text)} characters; the limit for task {task!r} is "
                    f"{settings.max_text_length}"
                )
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidRequest(f"min_confidence must be within [0, 1], got {min_confidence}")
        return settings

    async def predict(
        self,
        task: str,
        texts: Sequence[str],
        policy: Policy,
        min_confidence: float,
        deadline: float | None,
    ) -> list[Answer]:
        """Answer every text; `deadline` is a time.monotonic() value or None for no deadline."""
        settings = self._validate(task, texts, min_confidence)
        answers: list[Answer | None] = [None] * len(texts)
        generation = self._cache.generation(settings.cache_namespace) or ""
        # The generation an answer names: the one the cache was read in, if it was read.
        consulted = ""

        if policy is not Policy.MODEL_ONLY:
            try:
                read = await self._cache.get_many(
                    settings.cache_namespace,
                    generation,
                    texts,
                    self._student.serving(settings.model).stable.labels,
                    self._remaining(deadline),
                )
                cached = read.predictions
                if self.miss_counts.enabled:
                    self.miss_counts.add(
                        settings.cache_namespace,
                        [text for text, found in zip(texts, cached, strict=True) if found is None],
                    )
                if read.malformed:
                    self._metrics.cache_malformed.labels(task).inc(read.malformed)
                if generation and self._cache.tier_enabled:
                    self._metrics.cache_tier_hits.labels(task).inc(read.from_tier)
                    self._metrics.cache_tier_misses.labels(task).inc(len(texts) - read.from_tier)
                consulted = generation
            except DependencyUnavailable:
                self._metrics.cache_errors.labels(task).inc()
                if policy is Policy.CACHE_ONLY:
                    raise
                cached = [None] * len(texts)
            for index, prediction in enumerate(cached):
                if prediction is not None:
                    answers[index] = _from_cache(prediction, generation)
            hits = sum(prediction is not None for prediction in cached)
            self._metrics.cache_hits.labels(task).inc(hits)
            self._metrics.cache_misses.labels(task).inc(len(texts) - hits)

        missing = [index for index, answer in enumerate(answers) if answer is None]
        if missing and policy is Policy.CACHE_ONLY:
            raise CacheMiss(
                f"{len(missing)} of {len(texts)} texts are not in the cache of task {task!r} "
                f"(generation {generation or 'none'})"
            )
        if missing:
            serving = self._student.serving(settings.model)
            asked = [texts[i] for i in missing]
            answered = await self._ask_model(task, serving, asked, deadline)
            threshold = min_confidence or settings.confidence_threshold
            unsure = []
            for index, (model, result) in zip(missing, answered, strict=True):
                answers[index] = Answer(
                    label=result.label,
                    score=result.score,
                    scores=result.scores,
                    route=Route.MODEL,
                    model=model.name,
                    model_version=model.version,
                    cache_generation=consulted,
                )
                if result.score < threshold:
                    unsure.append(texts[index])
            if unsure:
                self._queue_misses(task, settings.cache_namespace, unsure)
            self._sample(task, settings.cache_namespace, [texts[i] for i in missing], answered)
        done = [answer for answer in answers if answer is not None]
        span = trace.get_current_span()
        if span.is_recording():
            versions = sorted({a.model_version for a in done if a.route is Route.MODEL})
            span.set_attributes({
                "switchyard.texts": len(texts),
                "switchyard.cache_hits": len(texts) - len(missing),
                "switchyard.cache_generation": consulted,
                "switchyard.model_version": ",".join(versions),
            })  # fmt: skip
        return done

    def _remaining(self, deadline: float | None) -> float:
        if deadline is None:
            return float("inf")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it could be answered")
        return remaining

    async def _ask_model(
        self, task: str, serving: Serving[StudentModel], texts: list[str], deadline: float | None
    ) -> list[tuple[StudentModel, ModelAnswer]]:
        """Each text's answer and the version that computed it. During a canary the candidate
        answers its share of the texts and the stable version the rest, in parallel; when the
        candidate fails, the stable version answers its texts too.

        A request without a deadline of its own waits for the model at most the router's
        Triton timeout in all, however many calls that takes (a shared call that failed and
        is asked again, the candidate's fallback)."""
        if deadline is None:
            deadline = time.monotonic() + self._settings.triton_timeout_ms / 1000
        to_candidate = serving.to_candidate(texts)
        candidate = serving.candidate
        if candidate is None or not any(to_candidate):
            answers = await self._call_model(task, serving.stable, "stable", texts, deadline)
            self._shadow(task, serving, texts, answers)
            return [(serving.stable, answer) for answer in answers]
        stable_texts = [
            text for text, chosen in zip(texts, to_candidate, strict=True) if not chosen
        ]
        candidate_texts = [text for text, chosen in zip(texts, to_candidate, strict=True) if chosen]

        async def on_candidate() -> tuple[StudentModel, list[ModelAnswer]]:
            try:
                return candidate, await self._call_model(
                    task, candidate, "candidate", candidate_texts, deadline
                )
            except DependencyUnavailable:  # counted by version in _call_model
                return serving.stable, await self._call_model(
                    task, serving.stable, "stable", candidate_texts, deadline
                )

        async def on_stable() -> list[ModelAnswer]:
            if not stable_texts:
                return []
            return await self._call_model(task, serving.stable, "stable", stable_texts, deadline)

        from_candidate, from_stable = await asyncio.gather(
            on_candidate(), on_stable(), return_exceptions=True
        )
        # Both calls end by the deadline; the first failure is the request's.
        if isinstance(from_candidate, BaseException):
            raise from_candidate
        if isinstance(from_stable, BaseException):
            raise from_stable
        candidate_model, candidate_answers = from_candidate
        stable_answers = from_stable
        self._shadow(task, serving, stable_texts, stable_answers)
        by_candidate = iter(candidate_answers)
        by_stable = iter(stable_answers)
        return [
            (candidate_model, next(by_candidate)) if chosen else (serving.stable, next(by_stable))
            for chosen in to_candidate
        ]

    async def _call_model(
        self,
        task: str,
        model: StudentModel,
        role: str,
        texts: Sequence[str],
        deadline: float,
    ) -> list[ModelAnswer]:
        """One call of one version, measured by version and role."""
        started = time.perf_counter()

        def classify(indices: list[int]) -> Awaitable[list[ModelAnswer]]:
            # The time left when the call is made: a waiter whose shared call failed asks
            # again with what its own deadline still allows.
            remaining = self._remaining(deadline)
            return self._student.classify(model, [texts[i] for i in indices], remaining)

        try:
            with self._tracer.start_as_current_span(f"model {role}") as span:
                answers, shared = await self._flights.many(
                    [(model.name, model.version, text) for text in texts], classify, deadline
                )
                if span.is_recording():
                    span.set_attributes({
                        "switchyard.model": model.name,
                        "switchyard.model_version": model.version,
                        "switchyard.texts": len(texts),
                        "switchyard.texts_shared": shared,
                    })  # fmt: skip
        except DeadlineExceeded:
            self._metrics.model_calls.labels(task, model.version, role, "deadline").inc()
            raise
        except DependencyUnavailable:
            self._metrics.model_calls.labels(task, model.version, role, "error").inc()
            raise
        self._metrics.model_calls.labels(task, model.version, role, "ok").inc()
        self._metrics.model_call_latency.labels(task, model.version, role).observe(
            time.perf_counter() - started
        )
        self._metrics.model_texts.labels(task, model.version, role).inc(len(answers))
        if shared:
            self._metrics.model_shared_texts.labels(task).inc(shared)
        confidence = self._metrics.confidence.labels(task, model.version, role)
        for answer in answers:
            confidence.observe(answer.score)
        return answers

    def _shadow(
        self,
        task: str,
        serving: Serving[StudentModel],
        texts: Sequence[str],
        answers: Sequence[ModelAnswer],
    ) -> None:
        """Ask the candidate too, off the request path, for a `shadow` share of the stable
        version's answers, and count how often the two agree. Bounded: a sample that finds
        every shadow slot taken is dropped, never queued."""
        candidate = serving.candidate
        if candidate is None or serving.shadow <= 0.0:
            return
        sampled = [
            (text, answer)
            for text, answer in zip(texts, answers, strict=True)
            if random.random() < serving.shadow
        ]
        if not sampled:
            return
        if self._shadows_in_flight >= self._settings.shadow_max_concurrency:
            self._metrics.shadow_dropped.labels(task).inc(len(sampled))
            return
        self._shadows_in_flight += 1

        async def shadow() -> None:
            try:
                shadowed = await self._call_model(
                    task,
                    candidate,
                    "shadow",
                    [text for text, _ in sampled],
                    time.monotonic() + self._settings.triton_timeout_ms / 1000,
                )
            except (DependencyUnavailable, DeadlineExceeded):
                self._metrics.shadow_dropped.labels(task).inc(len(sampled))
                return
            finally:
                self._shadows_in_flight -= 1
            for (_, stable_answer), candidate_answer in zip(sampled, shadowed, strict=True):
                agreed = "agree" if candidate_answer.label == stable_answer.label else "disagree"
                self._metrics.shadow_answers.labels(task, candidate.version, agreed).inc()

        self._run_in_background(shadow())

    def _queue_misses(self, task: str, namespace: str, texts: list[str]) -> None:
        """Queue low-confidence texts for the next offline run, off the request path."""

        async def queue() -> None:
            try:
                queued = await self._cache.queue_misses(namespace, texts)
            except DependencyUnavailable as exc:
                _log.warning("could not queue %d misses of task %s: %s", len(texts), task, exc)
                return
            self._metrics.misses_queued.labels(task).inc(queued)

        self._run_in_background(queue())

    def _sample(
        self,
        task: str,
        namespace: str,
        texts: Sequence[str],
        answered: Sequence[tuple[StudentModel, ModelAnswer]],
    ) -> None:
        """Record a `quality_sample_rate` share of the model's answers, off the request path,
        for `switchyard quality score` to compare with the teacher's."""
        rate = self._settings.quality_sample_rate
        if rate <= 0.0:
            return
        now = time.time()
        samples = [
            QualitySample(text, answer.label, answer.scores, model.name, model.version, now)
            for text, (model, answer) in zip(texts, answered, strict=True)
            if random.random() < rate
        ]
        if not samples:
            return

        async def record() -> None:
            try:
                await self._cache.record_samples(namespace, samples)
            except DependencyUnavailable as exc:
                _log.warning("could not record %d samples of task %s: %s", len(samples), task, exc)
                return
            self._metrics.quality_samples.labels(task).inc(len(samples))

        self._run_in_background(record())

    def _run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(work)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _from_cache(prediction: CachedPrediction, generation: str) -> Answer:
    return Answer(
        label=prediction.label,
        score=prediction.scores[prediction.label],
        scores=prediction.scores,
        route=Route.CACHE,
        model=prediction.model,
        model_version=prediction.model_version,
        cache_generation=generation,
    )
