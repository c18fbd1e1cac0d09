"""Wiring: build the router from its settings, serve gRPC (with health and reflection) and
Prometheus metrics, keep health honest, follow the repository's task set (and re-read it on
SIGHUP), the rollout records, the served versions and the Triton replicas, and shut down
gracefully on SIGTERM or SIGINT."""

import asyncio
import contextlib
import functools
import logging
import signal
import time
from typing import TYPE_CHECKING

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from prometheus_client import CollectorRegistry, start_http_server

from router import contract
from router.cache import CircuitBreaker, PredictionCache
from router.errors import DependencyUnavailable
from router.local_tier import LocalTier
from router.metrics import RouterMetrics
from router.model import StudentClient
from router.rollout import RolloutRecords
from router.routing import Router
from router.servicer import RouterServicer, add_router_to_server
from router.settings import RouterSettings, TaskSettings
from router.tasks import read_tasks, repository_state
from router.tls import server_credentials
from router.tracing import NO_TRACER, tracer_of, tracer_provider
from services.contracts.redis_connection import async_client

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["prediction_cache", "rollout_records", "serve", "student_client"]

_log = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _redis_client(settings: RouterSettings) -> "redis.Redis":
    """A client of the router's Redis (a cluster client when `redis_cluster`)."""
    connect_timeout = max(settings.redis_timeout_ms / 1000, 0.5)
    client: redis.Redis = async_client(
        settings,
        cluster=settings.redis_cluster,
        socket_connect_timeout=connect_timeout,
        # Every call the router makes carries its own timeout; redis-py's socket timeout (5 s
        # by default) would add an asyncio.wait_for task to every command's write and a
        # timeout to its read, about 25 us of CPU per cache read.
        socket_timeout=None,
    )
    return client


def prediction_cache(
    settings: RouterSettings,
    tasks: dict[str, TaskSettings],
    metrics: RouterMetrics,
    tracer: trace.Tracer = NO_TRACER,
) -> PredictionCache:
    """The cache route of these tasks as the settings describe it (not started)."""
    tier = LocalTier(
        settings.cache_tier_max_entries,
        settings.cache_tier_max_age_seconds,
        on_evict=metrics.cache_tier_evictions.inc,
    )
    metrics.cache_tier_entries.set_function(tier.__len__)
    return PredictionCache(
        _redis_client(settings),
        sorted({task.cache_namespace for task in tasks.values()}),
        timeout_s=settings.redis_timeout_ms / 1000,
        breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds),
        stream_max_len=settings.misses_stream_max_len,
        samples_max_len=settings.quality_samples_max_len,
        poll_s=settings.generation_poll_seconds,
        tier=tier,
        tracer=tracer,
    )


def student_client(settings: RouterSettings, tracer: trace.Tracer = NO_TRACER) -> StudentClient:
    """The model route as the settings describe it (no version loaded yet)."""
    return StudentClient(
        settings.triton_url,
        settings.model_repository,
        timeout_s=settings.triton_timeout_ms / 1000,
        buckets=settings.length_buckets,
        ready_timeout_s=settings.version_ready_timeout_seconds,
        calls_in_flight=settings.model_calls_in_flight,
        tracer=tracer,
    )


def rollout_records(settings: RouterSettings, changed: asyncio.Event) -> RolloutRecords:
    """The rollout records in Redis, followed for the version poll (not started)."""
    client = _redis_client(settings)
    # Off the request path: a slow Redis may take longer than a cache read is allowed.
    return RolloutRecords(
        client, timeout_s=max(settings.redis_timeout_ms / 1000, 1.0), changed=changed
    )


async def _watch_health(
    settings: RouterSettings,
    router: Router,
    cache: PredictionCache,
    student: StudentClient,
    health_servicer: health.aio.HealthServicer,
    metrics: RouterMetrics,
) -> None:
    """Report each dependency, and overall SERVING while at least one route can answer."""
    while True:
        models = sorted({task.model for task in router.tasks.values()})
        redis_up, triton_up = await asyncio.gather(cache.ping(), student.is_ready(models))
        for name, up in zip(contract.DEPENDENCIES, (redis_up, triton_up), strict=True):
            metrics.dependency_up.labels(name).set(1 if up else 0)
            await health_servicer.set(name, _SERVING if up else _NOT_SERVING)
        overall = _SERVING if redis_up or triton_up else _NOT_SERVING
        await health_servicer.set("", overall)
        await health_servicer.set(contract.SERVICE, overall)
        await asyncio.sleep(settings.health_poll_seconds)


def _grpc_server(
    settings: RouterSettings,
    router: Router,
    metrics: RouterMetrics,
    tracer: trace.Tracer,
) -> grpc.aio.Server:
    """The gRPC server: the Router service (its RPCs traced by `tracer`), health and
    reflection (health set by the caller)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    add_router_to_server(RouterServicer(router, metrics, tracer), server)
    reflection.enable_server_reflection(
        [contract.SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return server


def _export_generation_ages(
    metrics: RouterMetrics, cache: PredictionCache, tasks: dict[str, TaskSettings]
) -> None:
    for task, task_settings in tasks.items():
        metrics.generation_age.labels(task).set_function(
            functools.partial(cache.generation_age, task_settings.cache_namespace)
        )


async def _apply_tasks(
    settings: RouterSettings, router: Router, cache: PredictionCache, student: StudentClient
) -> bool:
    """Move the router to the repository's task set; True when every task of it is served.

    A new task joins only once its model is loaded here and Triton reports it ready, so no
    request is sent to a model Triton does not serve yet; it is tried again at the next poll.
    """
    wanted = read_tasks(settings).tasks
    usable = {}
    for name, task in wanted.items():
        if task.model not in student.loaded:
            if not await student.is_ready([task.model]):
                continue
            try:
                await student.load([task.model])
            except Exception as exc:  # a broken version folder must not stop the router
                _log.warning("task %r is not served: model %r: %s", name, task.model, exc)
                continue
        usable[name] = task
    if usable != router.tasks:
        await cache.follow(task.cache_namespace for task in usable.values())
        _export_generation_ages(router.metrics, cache, usable)
        added = sorted(set(usable) - set(router.tasks))
        removed = sorted(set(router.tasks) - set(usable))
        router.use_tasks(usable)
        for gone in removed:
            router.metrics.generation_age.remove(gone)
        _log.info(
            "serving tasks %s (added %s, removed %s)",
            ", ".join(sorted(usable)) or "none",
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
    return usable == wanted


async def _loadable(
    tasks: dict[str, TaskSettings], student: StudentClient, problems: list[str]
) -> dict[str, TaskSettings]:
    """The tasks whose model has a version that loads (loaded now); the others are left to
    the task poll (`_follow_tasks`), so one broken model does not keep the rest from serving."""
    loadable = {}
    for name, task in tasks.items():
        if task.model not in student.loaded:
            try:
                await student.load([task.model])
            except (FileNotFoundError, ValueError) as exc:
                problems.append(f"task {name!r}: {exc}")
                _log.warning("task %r is not served yet: %s", name, exc)
                continue
        loadable[name] = task
    if not loadable:
        raise ValueError(f"no task to serve: {'; '.join(problems)}")
    return loadable


async def _follow_tasks(
    settings: RouterSettings,
    router: Router,
    cache: PredictionCache,
    student: StudentClient,
    nudged: asyncio.Event,
    complete: bool,
) -> None:
    """Re-read the task set when the repository changes, on SIGHUP, and while a task waits
    for its model (`complete` is False when one already waits)."""
    state = repository_state(settings.model_repository)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(nudged.wait(), settings.task_poll_seconds)
        now = repository_state(settings.model_repository)
        if now != state or nudged.is_set() or not complete:
            nudged.clear()
            state = now
            try:
                complete = await _apply_tasks(settings, router, cache, student)
            except Exception:  # keep the current tasks; the next poll tries again
                _log.exception("could not reload the task set")
                complete = False


async def _follow_versions(
    settings: RouterSettings,
    student: StudentClient,
    records: RolloutRecords,
    changed: asyncio.Event,
    metrics: RouterMetrics,
) -> None:
    """Keep each model on the versions its rollout record asks for, or on the newest one
    Triton serves (`StudentClient.follow_versions`): every poll, and at once when a record
    changes."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), settings.version_poll_seconds)
        changed.clear()
        try:
            await _move_versions(student, records, metrics)
        except Exception:  # keep the served versions; the next poll tries again
            _log.exception("could not check the served versions")


async def _move_versions(
    student: StudentClient, records: RolloutRecords, metrics: RouterMetrics
) -> None:
    rollouts = await records.read(sorted(student.loaded))
    for change in await student.follow_versions(rollouts):
        if change.problem:
            metrics.version_failures.labels(change.model, change.version).inc()
            _log.warning(
                "model %s version %s is not used: %s", change.model, change.version,
                change.description,
            )  # fmt: skip
        else:
            _log.info("model %s: %s", change.model, change.description)
    for name in student.loaded:
        serving = student.serving(name)
        metrics.served_version.labels(name).set(int(serving.stable.version))
        candidate = serving.candidate
        metrics.candidate_version.labels(name).set(
            0 if candidate is None else int(candidate.version)
        )
        metrics.canary_weight.labels(name).set(serving.weight)


async def _follow_replicas(settings: RouterSettings, student: StudentClient) -> None:
    """Resolve a dns: Triton target again and again, so replicas an autoscaler adds get
    calls within `triton_resolve_seconds` and removed ones none."""
    while True:
        await asyncio.sleep(settings.triton_resolve_seconds)
        try:
            if await student.replicas.resolve():
                _log.info("triton replicas: %s", ", ".join(student.replicas.addresses))
        except Exception:  # keep the known replicas; the next lookup tries again
            _log.exception("could not resolve the triton replicas")


async def _follow_quality(
    settings: RouterSettings, router: Router, cache: PredictionCache, metrics: RouterMetrics
) -> None:
    """Export each task's last quality record (`switchyard quality score`) as metrics."""
    while True:
        for task, task_settings in list(router.tasks.items()):
            with contextlib.suppress(DependencyUnavailable):
                metrics.show_quality(
                    task, await cache.quality_record(task_settings.cache_namespace)
                )
        await asyncio.sleep(settings.quality_poll_seconds)


async def _flush_miss_counts(
    settings: RouterSettings, router: Router, cache: PredictionCache
) -> None:
    """Add the uncached texts counted since the last flush to Redis's, every
    `top_misses_flush_seconds` and once more when the router stops."""

    async def flush() -> None:
        for counts in router.miss_counts.take():
            try:
                await cache.count_misses(
                    counts.namespace,
                    counts.texts,
                    counts.total,
                    time.time(),
                    settings.top_misses_capacity,
                )
            except DependencyUnavailable as exc:
                _log.warning("dropped the miss counts of %s: %s", counts.namespace, exc)

    try:
        while True:
            await asyncio.sleep(settings.top_misses_flush_seconds)
            await flush()
    finally:
        await flush()


async def _cancel(task: "asyncio.Task[None]") -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(
    settings: RouterSettings,
    ready: asyncio.Event | None = None,
    provider: "TracerProvider | None" = None,
) -> None:
    """Run the router until SIGTERM or SIGINT. A start that fails half way (a port in use, a
    model repository without the model) closes what it had opened before raising.

    Spans go to `provider` when given (a test's), else to the settings' OTLP endpoint."""
    # First, so a bad certificate stops the start before anything else is set up.
    credentials = server_credentials(settings)
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    async with contextlib.AsyncExitStack() as resources:
        found = read_tasks(settings)
        if not found.tasks:
            reasons = "; ".join(found.problems) or f"{settings.model_repository} holds no model"
            raise ValueError(f"no task to serve: {reasons}")
        if provider is None:
            provider = tracer_provider(settings)
            if provider is not None:
                resources.callback(provider.shutdown)  # the spans still queued go out
        tracer = tracer_of(provider)
        student = student_client(settings, tracer)
        resources.push_async_callback(student.close)
        tasks = await _loadable(found.tasks, student, found.problems)
        versions_changed = asyncio.Event()
        records = rollout_records(settings, versions_changed)
        resources.push_async_callback(records.close)
        # Before the first request: a router started during a rollout serves what it asks.
        await _move_versions(student, records, metrics)
        records.start()
        cache = prediction_cache(settings, tasks, metrics, tracer)
        await cache.start()
        resources.push_async_callback(cache.close)
        _export_generation_ages(metrics, cache, tasks)
        router = Router(settings, tasks, cache, student, metrics, tracer)
        resources.push_async_callback(router.drain)
        server = _grpc_server(settings, router, metrics, tracer)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            if credentials is None:
                server.add_insecure_port(address)
            else:
                server.add_secure_port(address, credentials)
        except RuntimeError:
            raise OSError(
                f"cannot listen on {address}: the port is in use or not allowed"
            ) from None
        metrics_server, metrics_thread = start_http_server(
            settings.metrics_port, addr=settings.host, registry=registry
        )
        resources.callback(metrics_thread.join, timeout=2)
        resources.callback(metrics_server.shutdown)
        stopping, nudged = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum, event in (
            (signal.SIGTERM, stopping),
            (signal.SIGINT, stopping),
            (signal.SIGHUP, nudged),
        ):
            loop.add_signal_handler(signum, event.set)
            resources.callback(loop.remove_signal_handler, signum)
        await server.start()
        resources.push_async_callback(server.stop, 0)
        health_task = asyncio.create_task(
            _watch_health(settings, router, cache, student, health_servicer, metrics)
        )
        resources.push_async_callback(_cancel, health_task)
        tasks_watch = asyncio.create_task(
            _follow_tasks(settings, router, cache, student, nudged, tasks == found.tasks)
        )
        resources.push_async_callback(_cancel, tasks_watch)
        versions_watch = asyncio.create_task(
            _follow_versions(settings, student, records, versions_changed, metrics)
        )
        resources.push_async_callback(_cancel, versions_watch)
        quality_watch = asyncio.create_task(_follow_quality(settings, router, cache, metrics))
        resources.push_async_callback(_cancel, quality_watch)
        if router.miss_counts.enabled:
            miss_counts = asyncio.create_task(_flush_miss_counts(settings, router, cache))
            resources.push_async_callback(_cancel, miss_counts)
        metrics.triton_replicas.set_function(lambda: len(student.replicas.addresses))
        if student.replicas.follows_dns:
            replicas_watch = asyncio.create_task(_follow_replicas(settings, student))
            resources.push_async_callback(_cancel, replicas_watch)
        _log.info("router listening on %s, metrics on :%d", address, settings.metrics_port)
        if ready is not None:
            ready.set()
        await stopping.wait()
        # Health first, and keep serving while load balancers notice; then stop taking new
        # requests and let in-flight ones finish. The exit stack closes the rest.
        await _cancel(health_task)
        await health_servicer.enter_graceful_shutdown()
        _log.info("NOT_SERVING; closing the port in %.1f s", settings.shutdown_delay_seconds)
        await asyncio.sleep(settings.shutdown_delay_seconds)
        await server.stop(settings.shutdown_grace_seconds)
