"""Prometheus metrics of the router. Labels take only bounded values: task, route, code, and
the few model versions a router serves in its lifetime."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.contracts.quality_schema import AGREEMENT_GAUGES, QualityRecord

__all__ = ["RouterMetrics"]

# Sub-millisecond buckets for the cache route, up to seconds for a loaded model route.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "switchyard_requests",
            "Predictions answered, by task, route and gRPC status code.",
            ["method", "task", "route", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds",
            "Server time per RPC, by task and route.",
            ["method", "task", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.cache_hits = Counter(
            "switchyard_cache_hits", "Texts answered from the cache.", ["task"], registry=registry
        )
        self.cache_misses = Counter(
            "switchyard_cache_misses", "Texts not in the cache.", ["task"], registry=registry
        )
        self.cache_errors = Counter(
            "switchyard_cache_errors", "Cache lookups that failed.", ["task"], registry=registry
        )
        self.cache_tier_hits = Counter(
            "switchyard_cache_tier_hits",
            "Cache reads the router's in-process tier answered (a prediction or a known miss).",
            ["task"],
            registry=registry,
        )
        self.cache_tier_misses = Counter(
            "switchyard_cache_tier_misses",
            "Cache reads the in-process tier did not hold, so Redis was asked.",
            ["task"],
            registry=registry,
        )
        self.cache_tier_evictions = Counter(
            "switchyard_cache_tier_evictions",
            "Entries the in-process tier dropped to make room (least recently used).",
            registry=registry,
        )
        self.cache_tier_entries = Gauge(
            "switchyard_cache_tier_entries",
            "Entries in the in-process tier (predictions and known misses).",
            registry=registry,
        )
        self.cache_malformed = Counter(
            "switchyard_cache_malformed_values",
            "Cached values that could not be parsed (served as misses).",
            ["task"],
            registry=registry,
        )
        # The model route by version and role: "stable", "candidate" (its canary share) or
        # "shadow" (the candidate asked off the request path); the canary alerts compare them.
        self.model_calls = Counter(
            "switchyard_model_calls",
            "Calls of a student version, by outcome (ok, error, deadline).",
            ["task", "model_version", "role", "outcome"],
            registry=registry,
        )
        self.model_call_latency = Histogram(
            "switchyard_model_call_duration_seconds",
            "Time of one successful call of a student version.",
            ["task", "model_version", "role"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_texts = Counter(
            "switchyard_model_texts",
            "Texts a student version answered.",
            ["task", "model_version", "role"],
            registry=registry,
        )
        self.model_shared_texts = Counter(
            "switchyard_model_shared_texts",
            "Texts answered by another request's model call for the same text (single flight).",
            ["task"],
            registry=registry,
        )
        self.confidence = Histogram(
            "switchyard_model_confidence",
            "Probability of the model's answer.",
            ["task", "model_version", "role"],
            buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=registry,
        )
        self.shadow_answers = Counter(
            "switchyard_shadow_answers",
            "Shadowed texts, by whether the candidate's label agreed with the stable one's.",
            ["task", "model_version", "agreement"],
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "switchyard_shadow_dropped",
            "Texts sampled for shadowing but not shadowed (every slot busy, or the call failed).",
            ["task"],
            registry=registry,
        )
        self.quality_samples = Counter(
            "switchyard_quality_samples",
            "Model-route answers recorded for scoring against the teacher.",
            ["task"],
            registry=registry,
        )
        self.quality_gauges = tuple(
            Gauge(name, text, ["task", "model_version"], registry=registry)
            for name, text in AGREEMENT_GAUGES
        )
        self._quality_shown: dict[str, set[str]] = {}
        self.misses_queued = Counter(
            "switchyard_misses_queued",
            "Low-confidence texts queued for the next offline run.",
            ["task"],
            registry=registry,
        )
        self.generation_age = Gauge(
            "switchyard_cache_generation_age_seconds",
            "Age of the current cache generation (since its batch run started).",
            ["task"],
            registry=registry,
        )
        self.served_version = Gauge(
            "switchyard_model_served_version",
            "The version of each student model that answers the model route.",
            ["model"],
            registry=registry,
        )
        self.candidate_version = Gauge(
            "switchyard_model_candidate_version",
            "The candidate version of each student model on canary or shadow; 0 for none.",
            ["model"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "switchyard_model_canary_weight",
            "Share of texts the candidate version answers.",
            ["model"],
            registry=registry,
        )
        self.version_failures = Counter(
            "switchyard_model_version_failures_total",
            "Versions a model should serve but cannot: not in the repository, never READY in "
            "Triton, or files that do not load in the router (never used).",
            ["model", "version"],
            registry=registry,
        )
        self.triton_replicas = Gauge(
            "switchyard_triton_replicas",
            "Triton replicas the model route spreads its calls over.",
            registry=registry,
        )
        self.dependency_up = Gauge(
            "switchyard_dependency_up",
            "1 when the dependency answers health checks.",
            ["dependency"],
            registry=registry,
        )

    def show_quality(self, task: str, record: QualityRecord | None) -> None:
        """Export the task's last quality record (versions it no longer holds disappear)."""
        versions = {} if record is None else {v.model_version: v for v in record.versions}
        for gone in self._quality_shown.get(task, set()) - set(versions):
            for gauge in self.quality_gauges:
                gauge.remove(task, gone)
        for version, agreement in versions.items():
            for gauge, value in zip(self.quality_gauges, agreement.gauge_values(), strict=True):
                gauge.labels(task, version).set(value)
        self._quality_shown[task] = set(versions)
