"""How predictions are laid out in Redis; shared by the router and the offline batch job.

    switchyard:{<namespace>}:generation               -> id of the current generation
    switchyard:{<namespace>}:<generation>:meta        -> hash: who wrote it, when, how many rows
    switchyard:{<namespace>}:batch:<run id>           -> hash: state of one batch run (shards done)
    switchyard:{<namespace>}:misses                   -> stream of low-confidence texts
    switchyard:{<namespace>}:misses:seen              -> set of their hashes (deduplication)
    switchyard:{<namespace>}:misses:top:<day>         -> sorted set: the most frequent uncached
                                                         texts (normalised) of a UTC day, by count
    switchyard:{<namespace>}:misses:count:<day>       -> how many uncached texts came that day
    switchyard:{<namespace>}:quality:samples          -> stream of sampled model-route answers
    switchyard:{<namespace>}:quality                  -> JSON QualityRecord: their last scoring
    switchyard:<namespace>:<generation>:<text hash>   -> JSON CachedPrediction (with a TTL)
    channel switchyard:generations                    -> "<namespace> <generation>" on a flip

The same layout serves a single Redis and a Redis Cluster. On a cluster, the `{<namespace>}`
hash tag puts a namespace's control keys in one slot, so each of the batch job's scripts
(claim a run, record a shard, flip the pointer) touches one slot, while the prediction keys
carry no tag and spread over every slot and master.

The text hash is taken over the normalised text, so case and whitespace variants share a key.

Migration from the layout before the hash tags (`switchyard:<namespace>:generation`, with the
same prediction keys): a router reads the old pointer of a namespace that has no new one yet
(`legacy_generation_key`, single Redis only), so it keeps answering from the old generation
(its age unknown) until the next batch run writes the new layout and flips. Misses queued
under the old stream key are not read by new batch runs: run the batch job with
`--include-misses` before the upgrade to drain them.
"""

import hashlib
import json
import time
from dataclasses import dataclass

from services.contracts.text import normalize_text

__all__ = [
    "GENERATIONS_CHANNEL",
    "MISS_DAYS_KEPT",
    "NAMESPACE_PATTERN",
    "CachedPrediction",
    "batch_run_key",
    "generation_key",
    "generation_meta_key",
    "legacy_generation_key",
    "miss_day",
    "misses_count_key",
    "misses_seen_key",
    "misses_stream_key",
    "prediction_key",
    "prediction_key_for_hash",
    "quality_record_key",
    "quality_samples_key",
    "text_hash",
    "top_misses_key",
]

_PREFIX = "switchyard"
GENERATIONS_CHANNEL = f"{_PREFIX}:generations"
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()[:32]


NAMESPACE_PATTERN = r"^[^{}:\s]+$"
"""A namespace never holds braces (they would change the keys' hash tag), colons or spaces."""


def _control(namespace: str) -> str:
    """The prefix of a namespace's control keys, with the hash tag that keeps them in one
    cluster slot."""
    return f"{_PREFIX}:{{{namespace}}}"


def generation_key(namespace: str) -> str:
    return f"{_control(namespace)}:generation"


def legacy_generation_key(namespace: str) -> str:
    """The pointer of the layout before the hash tags; read until the next run flips."""
    return f"{_PREFIX}:{namespace}:generation"


def prediction_key(namespace: str, generation: str, text: str) -> str:
    return prediction_key_for_hash(namespace, generation, text_hash(text))


def prediction_key_for_hash(namespace: str, generation: str, digest: str) -> str:
    return f"{_PREFIX}:{namespace}:{generation}:{digest}"


def generation_meta_key(namespace: str, generation: str) -> str:
    return f"{_control(namespace)}:{generation}:meta"


def batch_run_key(namespace: str, run_id: str) -> str:
    return f"{_control(namespace)}:batch:{run_id}"


def misses_stream_key(namespace: str) -> str:
    return f"{_control(namespace)}:misses"


def misses_seen_key(namespace: str) -> str:
    return f"{_control(namespace)}:misses:seen"


MISS_DAYS_KEPT = 8
"""Days a day's miss counts live: a week of traffic for the weekly run, and a day of slack."""


def miss_day(timestamp: float) -> str:
    """The UTC day (2026-12-01) whose miss counts a time falls in."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def top_misses_key(namespace: str, day: str) -> str:
    return f"{_control(namespace)}:misses:top:{day}"


def misses_count_key(namespace: str, day: str) -> str:
    return f"{_control(namespace)}:misses:count:{day}"


def quality_samples_key(namespace: str) -> str:
    """The capped stream of sampled model-route answers (`quality_schema.QualitySample`)."""
    return f"{_control(namespace)}:quality:samples"


def quality_record_key(namespace: str) -> str:
    """The last scoring of that sample against the teacher (`quality_schema.QualityRecord`)."""
    return f"{_control(namespace)}:quality"


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
