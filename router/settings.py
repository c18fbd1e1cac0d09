"""The router's settings: one typed object from a YAML file, with environment overrides.

Environment variables win over the file: SWITCHYARD_ROUTER_REDIS_URL, and for nested
values SWITCHYARD_ROUTER_TASKS__<TASK>__CONFIDENCE_THRESHOLD. The tasks themselves come
from the model repository (`router.tasks`); `tasks:` here only overrides their settings.
Credentials belong in the environment (SWITCHYARD_ROUTER_REDIS_PASSWORD, or a Redis URL that
carries one), never in the file: `load_settings` refuses a file that holds a password.
"""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.contracts.cache_schema import NAMESPACE_PATTERN
from services.contracts.readable_file import ReadableFile
from services.contracts.redis_connection import RedisSettings

__all__ = ["RouterSettings", "TaskOverride", "TaskSettings", "load_settings"]

# Settings that name a file: a relative path in the YAML file is relative to that file.
_PATHS = (
    "model_repository",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "redis_tls_ca_file",
    "redis_tls_cert_file",
    "redis_tls_key_file",
)


class TaskSettings(BaseModel):
    """One served task, as the model card and the overrides resolve it (`router.tasks`)."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="Triton model serving the task's student")
    cache_namespace: str = Field(
        pattern=NAMESPACE_PATTERN, description="Redis namespace; the task name unless set"
    )
    confidence_threshold: float = Field(0.6, ge=0.0, le=1.0)
    max_text_length: int = Field(4000, gt=0, description="characters")


class TaskOverride(BaseModel):
    """What the router's settings may change about a task; unset values keep the card's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(None, description="Triton model [the task name]")
    cache_namespace: str | None = None
    confidence_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_text_length: int | None = Field(None, gt=0, description="characters")


class RouterSettings(RedisSettings, BaseSettings):
    """The Redis connection (URL, credentials, TLS) comes from RedisSettings. The gRPC port
    serves TLS when tls_cert_file and tls_key_file are set, and then also requires client
    certificates signed by tls_client_ca_file when that is set (mutual TLS)."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHYARD_ROUTER_", env_nested_delimiter="__", frozen=True
    )

    tasks: dict[str, TaskOverride] = Field(default_factory=dict)
    model_repository: Path
    redis_cluster: bool = False
    redis_timeout_ms: float = Field(50.0, gt=0)
    triton_url: str = Field(
        "127.0.0.1:8001",
        description="host:port, a list host:port,host:port, or dns:///NAME:PORT (every "
        "address NAME resolves to, e.g. a headless Service; router.replicas)",
    )
    triton_resolve_seconds: float = Field(
        10.0, gt=0, description="how often a dns: triton_url is resolved again"
    )
    triton_timeout_ms: float = Field(2000.0, gt=0)
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    max_batch_texts: int = Field(64, gt=0)
    max_message_bytes: int = Field(4 << 20, gt=0)
    max_concurrent_rpcs: int = Field(1000, gt=0)
    length_buckets: list[int] = Field(
        default_factory=list,
        description="token lengths a call is padded up to (e.g. [16, 32, 64, 128] for GPU "
        "instances, so Triton batches equal shapes); empty: the call's longest text",
    )
    model_calls_in_flight: int = Field(
        4,
        gt=0,
        description="calls of one model version open at once per Triton replica; "
        "texts that come while all are open share the next call",
    )
    misses_stream_max_len: int = Field(100_000, gt=0)
    top_misses_capacity: int = Field(
        1000,
        ge=0,
        description="most frequent uncached texts kept per namespace and day (router."
        "top_misses); 0: not counted",
    )
    top_misses_flush_seconds: float = Field(
        5.0, gt=0, description="how often the counts of uncached texts go to Redis"
    )
    quality_sample_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="share of model-route answers recorded for "
        "`switchyard quality score` to compare with the teacher; 0: none",
    )
    quality_samples_max_len: int = Field(
        10_000, gt=0, description="sampled answers kept per namespace (the newest)"
    )
    quality_poll_seconds: float = Field(
        30.0, gt=0, description="how often the quality records are read for the metrics"
    )
    tracing_otlp_endpoint: str = Field(
        "",
        description="OTLP/gRPC collector spans go to (http://otel-collector:4317); empty: "
        "tracing off (router.tracing)",
    )
    tracing_otlp_insecure: bool = Field(True, description="plaintext to the collector")
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of the traces started here that are recorded; a client's "
        "sampling decision stands",
    )
    tracing_service_name: str = "switchyard-router"
    cache_tier_max_entries: int = Field(
        100_000, ge=0, description="predictions and known misses kept in memory; 0: off"
    )
    cache_tier_max_age_seconds: float = Field(
        3600.0, gt=0, description="longest an entry is kept (never past its generation's TTL)"
    )
    generation_poll_seconds: float = Field(30.0, gt=0)
    version_poll_seconds: float = Field(
        1.0, gt=0, description="how often each model's served versions are checked"
    )
    version_ready_timeout_seconds: float = Field(
        60.0, gt=0, description="a wanted version not READY in Triton this long is reported"
    )
    shadow_max_concurrency: int = Field(
        4, gt=0, description="shadow calls in flight at most; more samples are dropped"
    )
    task_poll_seconds: float = Field(
        2.0, gt=0, description="how often the model repository is checked for task changes"
    )
    health_poll_seconds: float = Field(1.0, gt=0)
    breaker_failures: int = Field(3, gt=0)
    breaker_reset_seconds: float = Field(2.0, gt=0)
    shutdown_delay_seconds: float = Field(
        0.0, ge=0, description="NOT_SERVING but still answering, before the port closes"
    )
    shutdown_grace_seconds: float = Field(5.0, ge=0, description="for in-flight requests")
    tls_cert_file: ReadableFile | None = None
    tls_key_file: ReadableFile | None = None
    tls_client_ca_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _tls_files(self) -> "RouterSettings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return env_settings, init_settings


def load_settings(path: Path, **overrides: Any) -> RouterSettings:
    """Settings from a YAML file (relative paths resolved against it) plus `overrides`."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    # A file is committed, copied into images and mounted from ConfigMaps: no place for a
    # credential. The messages name the setting, never the value.
    if data.get("redis_password") is not None:
        raise ValueError(
            f"{path}: redis_password must not be in the settings file; "
            "set SWITCHYARD_ROUTER_REDIS_PASSWORD in the environment"
        )
    if isinstance(data.get("redis_url"), str) and urlsplit(data["redis_url"]).password:
        raise ValueError(
            f"{path}: redis_url holds a password, which must not be in the settings file; "
            "set SWITCHYARD_ROUTER_REDIS_PASSWORD in the environment"
        )
    for name in _PATHS:
        if isinstance(data.get(name), str):
            data[name] = (path.parent / data[name]).resolve()
    return RouterSettings(**(data | overrides))
