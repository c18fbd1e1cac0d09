"""How predictions are laid out in Redis; shared by the router and the offline batch job.

    switchyard:<namespace>:generation                -> id of the current generation
    switchyard:<namespace>:<generation>:<text hash>  -> JSON CachedPrediction (with a TTL)
    switchyard:<namespace>:<generation>:meta         -> hash: who wrote it, when, how many rows
    switchyard:<namespace>:batch:<run id>            -> hash: state of one batch run (shards done)
    switchyard:<namespace>:misses                    -> stream of low-confidence texts
    switchyard:<namespace>:misses:seen               -> set of their hashes (deduplication)
    channel switchyard:generations                   -> "<namespace> <generation>" on a flip

The text hash is taken over the normalised text, so case and whitespace variants share a key.
"""

import hashlib
import json
from dataclasses import dataclass

from services.contracts.text import normalize_text

__all__ = [
    "GENERATIONS_CHANNEL",
    "CachedPrediction",
    "batch_run_key",
    "generation_key",
    "generation_meta_key",
    "misses_seen_key",
    "misses_stream_key",
    "prediction_key",
    "prediction_key_for_hash",
    "text_hash",
]

_PREFIX = "switchyard"
GENERATIONS_CHANNEL = f"{_PREFIX}:generations"
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()[:32]


def generation_key(namespace: str) -> str:
    return f"{_PREFIX}:{namespace}:generation"


def prediction_key(namespace: str, generation: str, text: str) -> str:
    return prediction_key_for_hash(namespace, generation, text_hash(text))


def prediction_key_for_hash(namespace: str, generation: str, digest: str) -> str:
    return f"{_PREFIX}:{namespace}:{generation}:{digest}"


def generation_meta_key(namespace: str, generation: str) -> str:
    return f"{_PREFIX}:{namespace}:{generation}:meta"


def batch_run_key(namespace: str, run_id: str) -> str:
    return f"{_PREFIX}:{namespace}:batch:{run_id}"


def misses_stream_key(namespace: str) -> str:
    return f"{_PREFIX}:{namespace}:misses"


def misses_seen_key(namespace: str) -> str:
    return f"{_PREFIX}:{namespace}:misses:seen"


@dataclass(frozen=True)
class CachedPrediction:
    label: str
    scores: dict[str, float]
    model: str
    model_version: str
    created_at: float

    def to_json(self) -> str:
        # Spelled out: dataclasses.asdict deep-copies, and the batch job calls this per key.
        return _ENCODER.encode(
            {
                "label": self.label,
                "scores": self.scores,
                "model": self.model,
                "model_version": self.model_version,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> "CachedPrediction":
        """Parse a cached value; ValueError for anything malformed or foreign."""
        try:
            data = json.loads(raw)
            prediction = cls(
                label=str(data["label"]),
                scores={str(k): float(v) for k, v in data["scores"].items()},
                model=str(data["model"]),
                model_version=str(data["model_version"]),
                created_at=float(data["created_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed cached prediction: {type(exc).__name__}") from None
        if prediction.label not in prediction.scores:
            raise ValueError("malformed cached prediction: label has no score")
        if not all(0.0 <= score <= 1.0 for score in prediction.scores.values()):
            raise ValueError("malformed cached prediction: a score outside [0, 1]")
        return prediction
