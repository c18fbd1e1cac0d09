"""The routing decision, top to bottom: validate, look up the cache, ask the model for misses.

No gRPC types here: `router.servicer` converts messages to these calls and errors to codes.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from router.answers import Answer, ModelAnswer, Policy, Route, TaskInfo
from router.cache import PredictionCache
from router.errors import CacheMiss, DeadlineExceeded, DependencyUnavailable, InvalidRequest
from router.metrics import RouterMetrics
from router.settings import RouterSettings, TaskSettings
from services.contracts.cache_schema import CachedPrediction

__all__ = ["Router", "Student", "StudentModel"]

_log = logging.getLogger(__name__)


class StudentModel(Protocol):
    """The served version of a student model."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...


class Student(Protocol):
    """The model route: `router.model.StudentClient` on Triton, or a stand-in in tests."""

    def model(self, name: str) -> StudentModel: ...

    async def classify(
        self, name: str, texts: Sequence[str], timeout_s: float
    ) -> tuple[StudentModel, list[ModelAnswer]]:
        """The answers of the version that served them; DeadlineExceeded or
        DependencyUnavailable when the model cannot answer in time."""
        ...


class Router:
    def __init__(
        self,
        settings: RouterSettings,
        tasks: dict[str, TaskSettings],
        cache: PredictionCache,
        student: Student,
        metrics: RouterMetrics,
    ) -> None:
        self._settings = settings
        self._tasks = dict(tasks)
        self._cache = cache
        self._student = student
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

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
            model = self._student.model(settings.model)
            described.append(
                TaskInfo(
                    task=name,
                    labels=list(model.labels),
                    model=model.name,
                    model_version=model.version,
                    cache_generation=self._cache.generation(settings.cache_namespace) or "",
                    confidence_threshold=settings.confidence_threshold,
                    max_text_length=settings.max_text_length,
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
                cached, malformed = await self._cache.get_many(
                    settings.cache_namespace,
                    generation,
                    texts,
                    self._student.model(settings.model).labels,
                    self._remaining(deadline),
                )
                self._metrics.cache_malformed.labels(task).inc(malformed)
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
            model, results = await self._student.classify(
                settings.model, [texts[i] for i in missing], self._remaining(deadline)
            )
            threshold = min_confidence or settings.confidence_threshold
            unsure = []
            for index, result in zip(missing, results, strict=True):
                self._metrics.confidence.labels(task).observe(result.score)
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
        return [answer for answer in answers if answer is not None]

    def _remaining(self, deadline: float | None) -> float:
        if deadline is None:
            return float("inf")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it could be answered")
        return remaining

    def _queue_misses(self, task: str, namespace: str, texts: list[str]) -> None:
        """Queue low-confidence texts for the next offline run, off the request path."""

        async def queue() -> None:
            try:
                queued = await self._cache.queue_misses(namespace, texts)
            except DependencyUnavailable as exc:
                _log.warning("could not queue %d misses of task %s: %s", len(texts), task, exc)
                return
            self._metrics.misses_queued.labels(task).inc(queued)

        job = asyncio.create_task(queue())
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
