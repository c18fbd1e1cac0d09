"""Each scenario breaks one thing under load and checks what the router's clients saw.

A scenario returns a `ScenarioResult`: the traffic it sent, the status codes that came back,
the numbers that matter (recovery time, worst overrun of a deadline, memory growth) and the
checks that decide whether it passed. Every scenario leaves the testbed whole again.
"""

import random
import shutil
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import tritonclient.grpc as grpcclient
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from router import contract
from router.client import Policy, RequestError
from services.contracts.cache_schema import CachedPrediction, generation_key, prediction_key
from services.contracts.model_repository import MODEL_FILE, TOKENIZER_FILE, latest_version
from services.pipeline.rollout import LATEST, Rollouts
from services.processes.redis_cluster import RedisClusterServers
from services.reliability.testbed import Testbed, publish_generation
from services.reliability.traffic import Outcome, Traffic, TrafficPlan
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer, TritonSettings

__all__ = [
    "Corpus",
    "ScenarioResult",
    "bad_input",
    "generation_flips",
    "malformed_cache_values",
    "new_version",
    "redis_failover",
    "redis_outage",
    "rollout",
    "router_sigterm",
    "slow_triton",
    "soak",
    "triton_outage",
    "triton_replica_loss",
]

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ScenarioResult:
    name: str
    fault: str
    sent: int
    codes: dict[str, int]
    numbers: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.sent - self.codes.get("OK", 0)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


@dataclass(frozen=True)
class Corpus:
    """Texts the current generation answers (`cached`) and texts it does not (`uncached`)."""

    cached: list[str]
    uncached: list[str]
    labels: list[str]

    @classmethod
    def publish(cls, bed: Testbed, size: int = 32) -> "Corpus":
        labels = latest_version(bed.repository, bed.task).labels()
        cached = [f"reliability check {i}: parliament debates the budget" for i in range(size)]
        uncached = [f"uncached text {i} about a cup final and its fans" for i in range(size)]
        answers = {text: labels[i % len(labels)] for i, text in enumerate(cached)}
        publish_generation(bed.redis.client(), bed.task, labels, answers)
        return cls(cached, uncached, labels)


def _codes(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return dict(Counter(outcome.code for outcome in outcomes))


def _traffic(bed: Testbed, texts: Sequence[str], **plan: object) -> Traffic:
    return Traffic(bed.router.address, TrafficPlan(bed.task, texts, **plan))  # type: ignore[arg-type]


def _first(outcomes: Sequence[Outcome], after: float, good: Callable[[Outcome], bool]) -> float:
    """Seconds from `after` until the end of the first request started after it that is good."""
    for outcome in sorted(outcomes, key=lambda o: o.started):
        if outcome.started >= after and good(outcome):
            return outcome.ended - after
    return float("inf")


def _is_serving(bed: Testbed, timeout_s: float = 15.0) -> bool:
    """Whether the router reports itself SERVING within `timeout_s`."""
    with bed.router.client(timeout_s=2.0) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.health() == "SERVING":
                    return True
            except RequestError:
                pass
            time.sleep(0.1)
    return False


def redis_outage(bed: Testbed, corpus: Corpus, mode: str, outage_s: float = 3.0) -> ScenarioResult:
    """Redis stopped (`mode="stop"`, restarted from its snapshot) or paused with SIGSTOP.

    Hot texts (asked all along) are in the router's in-process tier, which answers them from
    its copy of the immutable generation while Redis is gone; cold texts (cached in Redis, but
    first asked when the outage starts) can only be answered by the model until it returns.
    """
    client = bed.redis.client()
    current = client.get(generation_key(bed.task))
    assert isinstance(current, bytes), "the testbed has no generation"
    generation = current.decode()
    cold = [f"cold text {i} {random.random():.6f}: the budget passes" for i in range(16)]
    labels = {text: corpus.labels[i % len(corpus.labels)] for i, text in enumerate(cold)}
    for text, label in labels.items():
        scores = {name: 0.9 if name == label else 0.05 for name in corpus.labels}
        value = CachedPrediction(label, scores, "teacher-test", "7", time.time()).to_json()
        client.set(prediction_key(bed.task, generation, text), value, ex=3600)
    hot = _traffic(bed, corpus.cached, clients=3, pause_s=0.01).start()
    cold_traffic: Traffic | None = None
    try:
        time.sleep(2.0)
        down = time.monotonic()
        cold_traffic = _traffic(bed, cold, clients=1, pause_s=0.01).start()
        if mode == "stop":
            bed.redis.stop()
        else:
            bed.redis.pause(True)
        time.sleep(outage_s)
        if mode == "stop":
            bed.redis.start()
        else:
            bed.redis.pause(False)
        back = time.monotonic()
        time.sleep(6.0)
    finally:
        bed.redis.pause(False)
        hot_outcomes = hot.stop()
        cold_outcomes = [] if cold_traffic is None else cold_traffic.stop()
    outcomes = hot_outcomes + cold_outcomes

    def during(of: Sequence[Outcome]) -> list[Outcome]:
        return [o for o in of if down + 0.2 <= o.started and o.ended <= back]

    recovery_s = _first(cold_outcomes, back, lambda o: o.ok and o.routes == ("cache",))
    settled = [o for o in outcomes if o.started >= back + 5.0]
    codes = _codes(outcomes)
    tier = bed.router.settings.get("cache_tier_max_entries", 1) != 0
    hot_during = during(hot_outcomes)
    return ScenarioResult(
        name=f"redis-{mode}",
        fault=f"Redis {'stopped' if mode == 'stop' else 'paused (SIGSTOP)'} for {outage_s:.0f} s "
        "under cache-route load (3 clients on hot texts, 1 on cold ones)",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "answered by the model during the outage": sum(
                o.routes == ("model",) for o in during(outcomes)
            ),
            "hot texts answered from the in-process tier during the outage": sum(
                o.routes == ("cache",) for o in hot_during
            ),
            "cache hits of cold texts resumed after (s)": recovery_s,
            "p99 latency during the outage (ms)": _p99_ms(during(outcomes)),
        },
        checks={
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "the model answered cold texts during the outage": any(
                o.routes == ("model",) for o in during(cold_outcomes)
            ),
            "hot texts kept coming from the in-process tier": not tier
            or (bool(hot_during) and all(o.routes == ("cache",) for o in hot_during)),
            "cache hits resume within 5 s": recovery_s <= 5.0,
            "only cache hits 5 s after Redis returned": bool(settled)
            and all(o.routes == ("cache",) for o in settled),
        },
    )


def triton_outage(bed: Testbed, corpus: Corpus, outage_s: float = 3.0) -> ScenarioResult:
    """Triton stopped: hits keep coming from the cache, misses fail fast, then recover."""
    cache_errors = _metric(bed, "switchyard_cache_errors_total", bed.task)
    hits = _traffic(bed, corpus.cached, clients=2, pause_s=0.01).start()
    misses = _traffic(bed, corpus.uncached, clients=2, pause_s=0.01, timeout_s=5.0).start()
    try:
        time.sleep(2.0)
        bed.triton.stop()
        down = time.monotonic()
        time.sleep(outage_s)
        bed.restart_triton()
        back = time.monotonic()
        time.sleep(5.0)
    finally:
        hit_outcomes, miss_outcomes = hits.stop(), misses.stop()
    refused = [o for o in miss_outcomes if down <= o.started and o.ended <= back]
    recovery_s = _first(miss_outcomes, back, lambda o: o.ok)
    settled = [o for o in miss_outcomes if o.started >= back + recovery_s]
    outcomes = hit_outcomes + miss_outcomes
    # A cached text whose Redis read failed (timed out on a loaded machine) is answered by
    # the model by design, and so fails while Triton is down: both of its answers were gone.
    failed_reads = _metric(bed, "switchyard_cache_errors_total", bed.task) - cache_errors
    failed_hits = sum(not o.ok for o in hit_outcomes)
    return ScenarioResult(
        name="triton-stop",
        fault=f"Triton stopped for {outage_s:.0f} s plus its restart, under cache-route and "
        "model-route load (2 + 2 clients, 5 s deadline)",
        sent=len(outcomes),
        codes=_codes(outcomes),
        numbers={
            "cache-route requests failed": failed_hits,
            "cache reads that failed (then asked the model)": failed_reads,
            "model-route requests refused while down": len(refused),
            "slowest refusal (ms)": max((o.seconds * 1000 for o in refused), default=0.0),
            "model route recovered after (s)": recovery_s,
        },
        checks={
            "no cache-route request fails unless its cache read failed": failed_hits
            <= failed_reads,
            "misses fail with UNAVAILABLE while Triton is down": bool(refused)
            and all(o.code == "UNAVAILABLE" and "triton" in o.details for o in refused),
            "each refusal within 0.5 s (deadline 5 s)": all(o.seconds < 0.5 for o in refused),
            "the model route recovers by itself within 5 s": recovery_s <= 5.0,
            "no failure once recovered": all(o.ok for o in settled),
        },
    )


def generation_flips(bed: Testbed, corpus: Corpus, flips: int = 12) -> ScenarioResult:
    """A new generation every 0.5 s, each labelling every text differently, under batch load."""
    client = bed.redis.client()
    label_of: dict[str, str] = {}
    traffic = _traffic(bed, corpus.cached, batch=4, clients=4).start()
    try:
        for flip in range(flips):
            label = corpus.labels[flip % len(corpus.labels)]
            generation = publish_generation(
                client, bed.task, corpus.labels, dict.fromkeys(corpus.cached, label)
            )
            label_of[generation] = label
            time.sleep(0.5)
    finally:
        outcomes = traffic.stop()
    answered = [o for o in outcomes if o.ok and set(o.generations) & set(label_of)]
    mixed = [o for o in answered if len(set(o.generations)) != 1]
    # Only the cache answers with a generation's label; a text the model answered (its
    # cache read timed out under load) names no generation, or the one it missed in.
    wrong = [
        o
        for o in answered
        if any(
            route == "cache" and label_of.get(g) != x
            for g, x, route in zip(o.generations, o.labels, o.routes, strict=True)
        )
    ]
    codes = _codes(outcomes)
    return ScenarioResult(
        name="generation-flips",
        fault=f"{flips} generation flips, 0.5 s apart, each relabelling every text, under "
        "4-text batch load (4 clients)",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "generations seen in answers": len({o.generations[0] for o in answered}),
            "responses mixing generations": len(mixed),
            "answers with another generation's label": len(wrong),
        },
        checks={
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "every response comes from one generation": not mixed,
            "every label is its generation's": not wrong,
            "the flips were seen": len({o.generations[0] for o in answered}) >= flips // 2,
        },
    )


def slow_triton(
    bed: Testbed, corpus: Corpus, stall_s: float = 3.0, deadline_s: float = 0.5
) -> ScenarioResult:
    """Triton stalled (no byte flows to or from it): model requests end at their deadline,
    cache hits go on.

    Requests with a client deadline must end with DEADLINE_EXCEEDED by it; requests without
    one by the router's own Triton timeout (`triton_timeout_ms`).
    """
    triton_timeout_s = bed.router.settings["triton_timeout_ms"] / 1000
    margin_s = 0.25
    cache_errors = _metric(bed, "switchyard_cache_errors_total", bed.task)
    hits = _traffic(bed, corpus.cached, clients=2, pause_s=0.01).start()
    bounded = _traffic(bed, corpus.uncached, clients=3, timeout_s=deadline_s).start()
    unbounded = _traffic(bed, corpus.uncached[::-1], clients=2, timeout_s=None).start()
    try:
        time.sleep(1.5)
        bed.stall_triton(True)
        stalled = time.monotonic()
        time.sleep(stall_s)
        bed.stall_triton(False)
        resumed = time.monotonic()
        time.sleep(3.0)
    finally:
        bed.stall_triton(False)
        hit_outcomes, bounded_outcomes, unbounded_outcomes = (
            hits.stop(),
            bounded.stop(),
            unbounded.stop(),
        )
    # As in triton_outage: a hit whose cache read failed asks the (stalled) model.
    failed_reads = _metric(bed, "switchyard_cache_errors_total", bed.task) - cache_errors
    failed_hits = sum(not o.ok for o in hit_outcomes)
    late_bounded = [o for o in bounded_outcomes if stalled <= o.started and o.ended <= resumed]
    late_unbounded = [o for o in unbounded_outcomes if stalled <= o.started and o.ended <= resumed]
    overrun_ms = max(
        [(o.seconds - deadline_s) * 1000 for o in late_bounded]
        + [(o.seconds - triton_timeout_s) * 1000 for o in late_unbounded],
        default=0.0,
    )
    outcomes = hit_outcomes + bounded_outcomes + unbounded_outcomes
    recovery_s = _first(bounded_outcomes, resumed, lambda o: o.ok)
    return ScenarioResult(
        name="triton-stalled",
        fault=f"Triton stalled (its connection frozen) for {stall_s:.0f} s under cache-route "
        f"load and model-route load with a {deadline_s * 1000:.0f} ms deadline and without one "
        f"(router's Triton timeout {triton_timeout_s * 1000:.0f} ms)",
        sent=len(outcomes),
        codes=_codes(outcomes),
        numbers={
            "cache-route requests failed": failed_hits,
            "cache reads that failed (then asked the model)": failed_reads,
            "model requests timed out while stalled": len(late_bounded) + len(late_unbounded),
            "worst overrun of a deadline (ms)": overrun_ms,
            "model route recovered after (s)": recovery_s,
        },
        checks={
            "no cache-route request fails unless its cache read failed": failed_hits
            <= failed_reads,
            "stalled requests end with DEADLINE_EXCEEDED": bool(late_bounded and late_unbounded)
            and all(o.code == "DEADLINE_EXCEEDED" for o in late_bounded + late_unbounded),
            f"none ends later than its deadline + {margin_s * 1000:.0f} ms": overrun_ms
            <= margin_s * 1000,
            "the model route recovers within 5 s": recovery_s <= 5.0,
        },
    )


def router_sigterm(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """SIGTERM under load: health turns NOT_SERVING first, clients that heed it within the
    shutdown delay see no error, and every request in flight completes. The router is started
    again afterwards."""
    delay_s = bed.router.settings["shutdown_delay_seconds"]
    lag_s = delay_s / 2  # how long a load balancer takes to act on NOT_SERVING
    texts = [t for pair in zip(corpus.cached, corpus.uncached, strict=True) for t in pair]
    traffic = _traffic(bed, texts, clients=6).start()
    not_serving_at: list[float] = []

    def watch() -> None:
        with grpc.insecure_channel(bed.router.address) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            try:
                for reply in stream:
                    if reply.status == NOT_SERVING:
                        not_serving_at.append(time.monotonic())
                        time.sleep(lag_s)
                        traffic.hold()  # what a load balancer does on NOT_SERVING
                        return
            except grpc.RpcError:
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    process = bed.router.process
    assert process is not None
    try:
        time.sleep(2.0)
        term = time.monotonic()
        bed.router.signal(15)
        exit_code = process.wait(30)
        exited = time.monotonic()
    finally:
        outcomes = traffic.stop()
        watcher.join(5)
        bed.router.process = None
        bed.router.start()
    in_flight = [o for o in outcomes if o.started <= term <= o.ended]
    after_term = [o for o in outcomes if o.started > term]
    codes = _codes(outcomes)
    seen_s = not_serving_at[0] - term if not_serving_at else float("inf")
    return ScenarioResult(
        name="router-sigterm",
        fault=f"router sent SIGTERM under mixed load (6 clients that stop {lag_s:.1f} s after "
        f"health turns NOT_SERVING); shutdown delay {delay_s:.1f} s",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "requests in flight at SIGTERM": len(in_flight),
            "requests started after SIGTERM (all answered)": len(after_term),
            "NOT_SERVING seen after (s)": seen_s,
            "router exited after (s)": exited - term,
        },
        checks={
            "health turned NOT_SERVING before the router exited": seen_s < exited - term,
            "every request in flight completed": all(o.ok for o in in_flight),
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "exit code 0": exit_code == 0,
        },
    )


def _publish_version(source: Path, target: Path, broken: str = "") -> None:
    """A copy of `source` as a new version folder, written aside and renamed in; a broken
    one has a `model` file onnxruntime cannot read, or a `tokenizer` that does not load."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copytree(source, partial)
    if broken == "model":
        (partial / MODEL_FILE).unlink()
        (partial / MODEL_FILE).write_bytes(b"not an onnx graph")
    elif broken == "tokenizer":
        (partial / TOKENIZER_FILE).unlink()
        (partial / TOKENIZER_FILE).write_text("{not a tokenizer", encoding="utf-8")
    partial.rename(target)


def _wait_for(condition: Callable[[], bool], seconds: float) -> float | None:
    """time.monotonic() when `condition` first held, or None if it did not within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.1)
    return None


def _triton_ready(bed: Testbed, version: str) -> bool:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{bed.triton_settings.grpc_port}") as triton:
        try:
            return bool(triton.is_model_ready(bed.task, version))
        except InferenceServerException:
            return False


def _answers_with(router: RouterProcess, task: str, text: str, version: str) -> bool:
    with router.client() as client:
        answer = client.predict(task, text, policy=Policy.MODEL_ONLY)
    return answer.model_version == version


def new_version(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """Two retrained students published one after the other under model-route load: the
    router moves to each once Triton serves it, the version before the newest two is
    released, and broken versions published next (a model file onnxruntime cannot read, a
    tokenizer that does not load) are never used and are reported."""
    current = latest_version(bed.repository, bed.task)
    first = int(current.version)
    new, newer = str(first + 1), str(first + 2)
    broken_model, broken_tokenizer = str(first + 3), str(first + 4)
    text = corpus.uncached[0]
    traffic = _traffic(bed, corpus.uncached, clients=3, policy=Policy.MODEL_ONLY).start()
    try:
        time.sleep(1.0)
        _publish_version(current.path, bed.repository / bed.task / new)
        ready_at = _wait_for(lambda: _triton_ready(bed, new), 60)
        moved_at = _wait_for(lambda: _answers_with(bed.router, bed.task, text, new), 30)
        _publish_version(current.path, bed.repository / bed.task / newer)
        _wait_for(lambda: _answers_with(bed.router, bed.task, text, newer), 60)
        released_at = _wait_for(lambda: not _triton_ready(bed, current.version), 30)
        _publish_version(current.path, bed.repository / bed.task / broken_model, "model")
        _publish_version(current.path, bed.repository / bed.task / broken_tokenizer, "tokenizer")

        def reported() -> bool:
            with bed.router.client() as client:
                (info,) = [t for t in client.list_tasks() if t.task == bed.task]
            problems = " ".join(info.version_problems)
            return (
                f"version {broken_model}:" in problems
                and f"version {broken_tokenizer}:" in problems
            )

        reported_at = _wait_for(reported, 30)
        broken_ready = _triton_ready(bed, broken_model)
        failures = {
            version: _sample(
                bed.router,
                "switchyard_model_version_failures_total",
                model=bed.task,
                version=version,
            )
            for version in (broken_model, broken_tokenizer)
        }
    finally:
        outcomes = traffic.stop()
        # The broken versions go again: the testbed stays whole for the next scenario.
        for version in (broken_model, broken_tokenizer):
            shutil.rmtree(bed.repository / bed.task / version, ignore_errors=True)
    versions = Counter(v for o in outcomes if o.ok for v in o.versions)
    late_old = [
        o
        for o in outcomes
        if moved_at and o.started > moved_at + 1.0 and current.version in o.versions
    ]
    codes = _codes(outcomes)
    switch_s = None if ready_at is None or moved_at is None else round(moved_at - ready_at, 2)
    return ScenarioResult(
        name="new-version",
        fault=f"versions {new} and {newer} published under model-route load (3 clients), then "
        f"broken versions {broken_model} (a model file onnxruntime cannot read) and "
        f"{broken_tokenizer} (a tokenizer that does not load)",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "seconds from Triton READY to the router's switch": (
                float("nan") if switch_s is None else switch_s
            ),
            **{f"answers from version {v}": n for v, n in sorted(versions.items())},
            "old-version answers started 1 s after the switch": len(late_old),
        },
        checks={
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "the new version is served by Triton": ready_at is not None,
            "the router moves within 10 s of READY": switch_s is not None and switch_s <= 10,
            "the version before the newest two is released": released_at is not None,
            "the broken versions are never served": not broken_ready
            and not {broken_model, broken_tokenizer} & set(versions),
            "the broken versions are in health details (ListTasks)": reported_at is not None,
            "and in switchyard_model_version_failures_total": all(failures.values()),
        },
    )


def rollout(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """Canary, shadow, promote and roll back under model-route load on two routers, with
    `switchyard models`' rollout records in Redis."""
    with bed.router.client() as client:
        (info,) = [t for t in client.list_tasks() if t.task == bed.task]
    current = info.model_version
    candidate = str(int(latest_version(bed.repository, bed.task).version) + 1)
    other = RouterProcess(
        bed.directory, bed.repository, bed.redis.url, bed.triton_settings.grpc_port,
        **bed.router_overrides,
    )  # fmt: skip
    routers = [bed.router, other]
    rollouts = Rollouts(bed.redis.client(), bed.repository)
    texts = [f"canary text {i}: a new phone and a cup final" for i in range(2000)]
    numbers: dict[str, float] = {}
    checks: dict[str, bool] = {}
    traffic: list[Traffic] = []

    def both_answer_with(version: str) -> float | None:
        started = time.monotonic()
        done = _wait_for(
            lambda: all(_answers_with(r, bed.task, corpus.uncached[1], version) for r in routers),
            10,
        )
        return None if done is None else done - started

    try:
        other.start()
        # Pinned first, so the routers do not simply follow the candidate once it is served.
        rollouts.promote(bed.task, current)
        _publish_version(bed.repository / bed.task / current, bed.repository / bed.task / candidate)
        checks["the candidate is served by Triton"] = (
            _wait_for(lambda: _triton_ready(bed, candidate), 60) is not None
        )
        traffic = [
            Traffic(
                r.address,
                TrafficPlan(bed.task, corpus.uncached, clients=2, policy=Policy.MODEL_ONLY),
            ).start()
            for r in routers
        ]
        # Shadow of a tenth of the answers, against none, in alternating windows so drift
        # in the machine's load falls on both alike.
        windows: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(3):
            for shadowing in (False, True):
                if shadowing:
                    rollouts.canary(bed.task, candidate, weight=0.0, shadow=0.1)
                else:
                    rollouts.promote(bed.task, current)
                time.sleep(0.5)  # both routers follow
                opened = time.monotonic()
                time.sleep(1.5)
                windows[shadowing].append(_p50_ms(traffic, since=opened))
        agreed = _sample(bed.router, "switchyard_shadow_answers_total", task=bed.task)
        numbers |= {
            "p50 latency, shadow off (ms)": statistics.median(windows[False]),
            "p50 latency, shadow of 10% of the answers (ms)": statistics.median(windows[True]),
            "shadow comparisons on one router": agreed,
        }
        checks["the shadow agreement metric appears"] = agreed > 0

        rollouts.canary(bed.task, candidate, weight=0.2, shadow=0.0)
        time.sleep(2.0)
        seen: list[dict[str, str]] = []
        for router in routers:
            with router.client(timeout_s=5.0) as client:
                versions: dict[str, str] = {}
                for start in range(0, len(texts), 8):
                    batch = texts[start : start + 8]
                    answers = client.predict_batch(bed.task, batch, policy=Policy.MODEL_ONLY)
                    versions.update(
                        (t, a.model_version) for t, a in zip(batch, answers, strict=True)
                    )
            seen.append(versions)
        share = sum(v == candidate for v in seen[0].values()) / len(texts)
        numbers["canary share of 2,000 distinct texts at weight 20% (%)"] = 100 * share
        checks["the canary answers 20% ± 3% of distinct texts"] = 0.17 <= share <= 0.23
        checks["each text gets the same version on both routers"] = seen[0] == seen[1]

        for step, change, version in (
            ("promoted", lambda: rollouts.promote(bed.task, candidate), candidate),
            ("rolled-back", lambda: rollouts.rollback(bed.task), current),
        ):
            change()
            took = both_answer_with(version)
            numbers[f"seconds until both routers serve the {step} version"] = (
                float("nan") if took is None else round(took, 2)
            )
            checks[f"both routers serve the {step} version within 2 s"] = (
                took is not None and took <= 2.0
            )
    finally:
        outcomes = [o for t in traffic for o in t.stop()]
        rollouts.promote(bed.task, LATEST)
        rollouts.close()
        other.stop()
    codes = _codes(outcomes)
    checks = {"zero failed requests": codes.get("OK", 0) == len(outcomes)} | checks
    return ScenarioResult(
        name="rollout",
        fault=f"version {candidate} rolled out beside {current} under model-route load on two "
        "routers (2 clients each): shadow of 10% of the answers, a 20% canary, promote, roll back",
        sent=len(outcomes),
        codes=codes,
        numbers=numbers,
        checks=checks,
    )


def _p50_ms(traffic: Sequence[Traffic], since: float) -> float:
    recent = [o.seconds * 1000 for t in traffic for o in t.outcomes() if o.started >= since]
    return statistics.median(recent) if recent else float("nan")


def _sample(router: RouterProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples on `router` whose labels include `labels`."""
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def redis_failover(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """A master of a six-node Redis Cluster stopped under cache-route load: the model route
    answers the texts of its slots until its replica takes over, then the cache does again."""
    cluster = RedisClusterServers(bed.directory / "redis-cluster", node_timeout_ms=2000)
    router = RouterProcess(
        bed.directory, bed.repository, cluster.url, bed.triton_settings.grpc_port,
        **bed.router_overrides | {"redis_cluster": True},
    )  # fmt: skip
    texts = [f"failover text {i}: the markets and a cup final" for i in range(300)]
    traffic: Traffic | None = None
    promoted_s = float("inf")
    killed_at = 0.0
    try:
        cluster.start()
        router.start()
        client = cluster.client()
        answers = {text: corpus.labels[i % len(corpus.labels)] for i, text in enumerate(texts)}
        generation = publish_generation(client, bed.task, corpus.labels, answers)

        def cached() -> bool:
            with router.client() as probe:
                return probe.predict(bed.task, texts[0]).cache_generation == generation

        _wait_for(cached, 30)
        traffic = Traffic(router.address, TrafficPlan(bed.task, texts, clients=4)).start()
        time.sleep(2.0)
        key = prediction_key(bed.task, generation, texts[0])
        port = int(client.get_node_from_key(key).port)
        (victim,) = [node for node in cluster.nodes if node.port == port]
        lost = {
            t
            for t in texts
            if client.get_node_from_key(prediction_key(bed.task, generation, t)).port == port
        }
        killed_at = time.monotonic()
        victim.stop()
        promoted = _wait_for(lambda: len(cluster.masters()) == 3, 30)
        promoted_s = float("inf") if promoted is None else promoted - killed_at
        time.sleep(3.0)
    finally:
        outcomes = [] if traffic is None else traffic.stop()
        router.stop()
        cluster.stop()
    # From the stop, through the first model answer of a lost text, to the cache again.
    disrupted = killed_at + _first(
        outcomes, killed_at, lambda o: o.routes == ("model",) and o.texts[0] in lost
    )
    resumed_s = (
        0.0  # no request ever missed the lost slots
        if disrupted == float("inf")
        else (disrupted - killed_at)
        + _first(outcomes, disrupted, lambda o: o.routes == ("cache",) and o.texts[0] in lost)
    )
    after = [o for o in outcomes if o.started >= killed_at]
    by_model = sum(1 for o in after if o.ok and o.routes == ("model",))
    codes = _codes(outcomes)
    return ScenarioResult(
        name="redis-master-failover",
        fault="one master of a Redis Cluster (3 masters, 3 replicas, node timeout 2 s) stopped "
        "under cache-route load (4 clients)",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "texts in the lost master's slots": len(lost),
            "seconds until its replica was promoted": promoted_s,
            "seconds until the lost slots answered from the cache again": resumed_s,
            "answers from the model meanwhile": by_model,
        },
        checks={
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "a replica takes over within 30 s": promoted_s <= 30,
            "cache hits of the lost master's keys resume": resumed_s < float("inf"),
        },
    )


def triton_replica_loss(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """Model-route load over three Triton replicas, one of which is then stopped: the calls
    spread over all three, and losing one fails no request."""
    extra = [TritonServer(TritonSettings.on_free_ports(bed.repository)) for _ in range(2)]
    tritons = [bed.triton, *extra]
    ports = [triton.settings.grpc_port for triton in tritons]
    router = RouterProcess(
        bed.directory, bed.repository, bed.redis.url, ports[0],
        **bed.router_overrides | {"triton_url": ",".join(f"127.0.0.1:{p}" for p in ports)},
    )  # fmt: skip
    traffic: Traffic | None = None
    shares: list[float] = []
    stopped_at = 0.0
    try:
        for triton in extra:
            triton.start()
        router.start()
        plan = TrafficPlan(bed.task, corpus.uncached, clients=3, policy=Policy.MODEL_ONLY)
        started = [triton.inference_count(bed.task) for triton in tritons]
        traffic = Traffic(router.address, plan).start()
        # The spread is measured once the router calls every replica: each joins its
        # rotation when it reports the model READY, which may take a poll after start-up.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(
            t.inference_count(bed.task) == n for t, n in zip(tritons, started, strict=True)
        ):
            time.sleep(0.1)
        before = [triton.inference_count(bed.task) for triton in tritons]
        time.sleep(4.0)
        spread = [t.inference_count(bed.task) - b for t, b in zip(tritons, before, strict=True)]
        shares = [n / max(sum(spread), 1) for n in spread]
        stopped_at = time.monotonic()
        extra[0].stop()
        time.sleep(3.0)
    finally:
        outcomes = [] if traffic is None else traffic.stop()
        router.stop()
        for triton in extra:
            triton.stop()
    codes = _codes(outcomes)
    after = [o for o in outcomes if o.started >= stopped_at]
    return ScenarioResult(
        name="triton-replica-loss",
        fault="model-route load (3 clients) over three Triton replicas, then one stopped",
        sent=len(outcomes),
        codes=codes,
        numbers={
            **{
                f"share of inferences on replica {i + 1} (%)": 100 * x for i, x in enumerate(shares)
            },
            "requests after the loss": len(after),
        },
        checks={
            "zero failed requests": codes.get("OK", 0) == len(outcomes),
            "each replica serves 20% to 47% of the inferences": len(shares) == 3
            and all(0.2 <= x <= 0.47 for x in shares),
            "requests keep being answered after the loss": bool(after) and all(o.ok for o in after),
        },
    )


def malformed_cache_values(bed: Testbed, corpus: Corpus) -> ScenarioResult:
    """Corrupted and foreign values under keys of the current generation: misses (model
    route), counted."""
    client = bed.redis.client()
    generation = client.get(generation_key(bed.task))
    assert isinstance(generation, bytes), "the testbed has no generation"
    values: list[bytes] = [
        b"", b"not json", b"\xff\xfe\x00", b"[]", b"{}", b"null", b"[" * 10_000,
        b'{"label": "x", "scores": {"x": 1.0}, "model": "m", "model_version": "1",'
        b' "created_at": 0}',
        b'{"label": "politics", "scores": {"politics": 7}, "model": "m", "model_version": "1",'
        b' "created_at": 0}',
        b'{"label": "politics", "scores": {"politics": NaN}, "model": "m", "model_version": "1",'
        b' "created_at": 0}',
    ]  # fmt: skip
    # Texts no router has asked for: a generation never changes, so a router may hold the
    # answers of texts it has seen in its in-process tier, and would rightly keep them.
    nonce = random.random()
    victims = [f"malformed victim {i} {nonce:.6f}: the budget passes" for i in range(len(values))]
    for text, value in zip(victims, values, strict=True):
        client.set(prediction_key(bed.task, generation.decode(), text), value, ex=3600)
    before = _metric(bed, "switchyard_cache_malformed_values_total", bed.task)
    outcomes: list[Outcome] = []
    with bed.router.client() as router:
        for text in victims:
            started = time.monotonic()
            answer = router.predict(bed.task, text)
            outcomes.append(Outcome(started, time.monotonic(), "OK", routes=(answer.route.value,)))
    counted = _metric(bed, "switchyard_cache_malformed_values_total", bed.task) - before
    return ScenarioResult(
        name="malformed-cache-values",
        fault=f"{len(values)} cached values replaced by corrupted or foreign ones (empty, not "
        "JSON, invalid UTF-8, wrong shape, 10,000-deep nesting, unknown label, score 7, NaN)",
        sent=len(outcomes),
        codes=_codes(outcomes),
        numbers={
            "answered by the model": sum(o.routes == ("model",) for o in outcomes),
            "counted as malformed": counted,
        },
        checks={
            "never returned: every one answered by the model": all(
                o.routes == ("model",) for o in outcomes
            ),
            "each counted in switchyard_cache_malformed_values_total": counted == len(values),
        },
    )


def bad_input(bed: Testbed, requests: int = 400, seed: int = 7) -> ScenarioResult:
    """Random junk: raw bytes as requests, arbitrary Unicode, huge and empty texts, unknown
    tasks and policies, oversized batches. Every answer is a status with a message, never
    INTERNAL or UNKNOWN, and the router stays up."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    silent = 0
    with grpc.insecure_channel(
        bed.router.address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        raw_predict = channel.unary_unary(f"/{contract.SERVICE}/Predict")
        raw_batch = channel.unary_unary(f"/{contract.SERVICE}/PredictBatch")
        for index in range(requests):
            payload, call = _junk(rng, index, bed.task), raw_predict if index % 2 else raw_batch
            started = time.monotonic()
            try:
                call(payload, timeout=10)
                code, details = "OK", ""
            except grpc.RpcError as exc:
                code, details = exc.code().name, exc.details() or ""
            silent += code != "OK" and not details
            outcomes.append(Outcome(started, time.monotonic(), code, details))
    codes = _codes(outcomes)
    serving = _is_serving(bed)
    return ScenarioResult(
        name="bad-input",
        fault=f"{requests} random malformed requests (seed {seed}): raw bytes, control "
        "characters, right-to-left marks, invalid UTF-8, empty and 100k-character texts, "
        "unknown tasks and policies, NaN confidence, oversized batches and messages",
        sent=len(outcomes),
        codes=codes,
        numbers={"answers without a message": silent},
        checks={
            "never INTERNAL or UNKNOWN": not {"INTERNAL", "UNKNOWN"} & codes.keys(),
            "every error has a message": silent == 0,
            "the router is still SERVING": serving,
        },
    )


def _junk(rng: random.Random, index: int, task: str) -> bytes:
    """One malformed or hostile request body, PredictRequest or PredictBatchRequest shaped."""
    kind = index % 8
    alphabet = "ab \t\n\r\x00\x07\u200f\u202e\u0301\ufeff\U0001f600é\u4e2d"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    message: Message
    if kind == 0:
        return rng.randbytes(rng.randint(1, 64))
    if kind == 1:  # a string field holding invalid UTF-8 (a CESU-8 lone surrogate)
        name = task.encode()
        return b"\x0a" + bytes([len(name)]) + name + b"\x12\x03\xed\xa0\x80"
    if kind == 2:
        message = contract.PredictRequest(task=task, text="x" * 100_000)
    elif kind == 3:
        message = contract.PredictRequest(task=text, text=text)
    elif kind == 4:
        message = contract.PredictRequest(task=task, text=text or "x")
        message.policy = rng.choice([4, 99, -1])
    elif kind == 5:
        confidence = rng.choice([float("nan"), 2.0, -1.0])
        message = contract.PredictRequest(task=task, text=text, min_confidence=confidence)
    elif kind == 6 and index % 16 == 14:  # over the message size limit (4 MiB by default)
        message = contract.PredictRequest(task=task, text="x" * (5 << 20))
    elif kind == 6:
        count = rng.choice([0, 9, 1000])
        message = contract.PredictBatchRequest(task=task, texts=[text or "x"] * count)
    else:  # junk in front of a valid message
        prefix = rng.randbytes(rng.randint(1, 8))
        message = contract.PredictRequest(task=task, text=text)
        return prefix + bytes(message.SerializeToString())
    serialized: bytes = message.SerializeToString()
    return serialized


def soak(
    bed: Testbed, corpus: Corpus, seconds: float, load: float = 0.8, probe_s: float = 5.0
) -> ScenarioResult:
    """At `load` of the capacity measured just before, for `seconds`: no error, and the
    router's memory after warm-up (the first quarter, at least 5 s) grows by at most 10%."""
    warmup_s = max(seconds / 4, 5.0)
    texts = corpus.cached[:24] + corpus.uncached[:8]  # a quarter of requests need the model
    probe = _traffic(bed, texts, clients=8).start()
    time.sleep(probe_s)
    capacity = len([o for o in probe.stop() if o.ok]) / probe_s
    rate = capacity * load
    router = psutil.Process(bed.router.process.pid)  # type: ignore[union-attr]
    samples: list[tuple[float, int]] = []
    traffic = _traffic(bed, texts, rate=rate, timeout_s=5.0).start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            samples.append((time.monotonic() - started, router.memory_info().rss))
            time.sleep(1.0)
    finally:
        outcomes = traffic.stop()
    warm = [rss for at, rss in samples if at >= warmup_s]
    baseline = statistics.median(warm[:3]) if warm else float("nan")
    final = statistics.median(warm[-3:]) if warm else float("nan")
    growth = final / baseline - 1
    codes = _codes(outcomes)
    # Slots the load generator itself skipped (its cap on requests in flight was reached):
    # never sent, so not the router's failures, but a sign the machine could not keep up.
    sent = [o for o in outcomes if (o.code, o.details) != ("RESOURCE_EXHAUSTED", "client")]
    skipped = len(outcomes) - len(sent)
    return ScenarioResult(
        name="soak",
        fault=f"{seconds:.0f} s ({warmup_s:.0f} s warm-up), open loop at {load:.0%} of the "
        f"capacity measured just before ({capacity:.0f} req/s with 8 closed-loop clients); a "
        "quarter of requests on the model route",
        sent=len(outcomes),
        codes=codes,
        numbers={
            "capacity (req/s)": capacity,
            "offered rate (req/s)": rate,
            "achieved rate (req/s)": len(outcomes) / seconds,
            "p50 latency (ms)": statistics.median(o.seconds * 1000 for o in outcomes),
            "p99 latency (ms)": _p99_ms(outcomes),
            "router RSS after warm-up (MiB)": baseline / 2**20,
            "router RSS at the end (MiB)": final / 2**20,
            "memory growth after warm-up (%)": growth * 100,
            "slots the client skipped (it fell behind)": skipped,
        },
        checks={
            "zero failed requests (of those sent)": all(o.code == "OK" for o in sent),
            "the client sent at least 99% of its slots": skipped <= 0.01 * len(outcomes),
            "memory grows by at most 10% after warm-up": growth <= 0.10,
        },
    )


def _p99_ms(outcomes: Sequence[Outcome]) -> float:
    ordered = sorted(o.seconds * 1000 for o in outcomes)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def _metric(bed: Testbed, name: str, task: str) -> float:
    url = f"http://127.0.0.1:{bed.router.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'{name}{{task="{task}"}}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
