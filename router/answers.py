"""What the router answers, as plain values: no gRPC, no Redis, no Triton.

`Policy` and `Route` are the domain's names for the wire enums of the contract; the one
mapping between the two is `router.contract`.
"""

import enum
from dataclasses import dataclass, field

__all__ = ["Answer", "ModelAnswer", "Policy", "Prediction", "Route", "TaskInfo"]


class Policy(enum.Enum):
    """Where an answer may come from."""

    AUTO = "auto"
    CACHE_ONLY = "cache_only"
    MODEL_ONLY = "model_only"


class Route(enum.Enum):
    """Where an answer came from."""

    CACHE = "cache"
    MODEL = "model"


@dataclass(frozen=True)
class ModelAnswer:
    """The student's answer to one text, before the router adds where it came from."""

    label: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True)
class Answer:
    label: str
    score: float
    scores: dict[str, float]
    route: Route
    model: str
    model_version: str
    cache_generation: str


@dataclass(frozen=True)
class Prediction(Answer):
    """An answer as a client receives it, with the time the router spent on the request."""

    server_latency_ms: float


@dataclass(frozen=True)
class TaskInfo:
    task: str
    labels: list[str]
    model: str
    model_version: str
    cache_generation: str
    confidence_threshold: float
    max_text_length: int
    candidate_version: str = ""
    canary_weight: float = 0.0
    shadow_share: float = 0.0
    version_problems: list[str] = field(default_factory=list)
