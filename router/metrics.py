"""Prometheus metrics of the router. Labels take only bounded values: task, route, code."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.cache_malformed = Counter(
            "switchyard_cache_malformed_values",
            "Cached values that could not be parsed (served as misses).",
            ["task"],
            registry=registry,
        )
        self.confidence = Histogram(
            "switchyard_model_confidence",
            "Probability of the model's answer.",
            ["task"],
            buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=registry,
        )
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
        self.version_failures = Counter(
            "switchyard_model_version_failures_total",
            "New versions Triton served whose files did not load in the router (never used).",
            ["model", "version"],
            registry=registry,
        )
        self.dependency_up = Gauge(
            "switchyard_dependency_up",
            "1 when the dependency answers health checks.",
            ["dependency"],
            registry=registry,
        )
