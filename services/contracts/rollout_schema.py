"""Which version of a student model answers: the rollout record, shared by the routers (which
read it) and `switchyard models canary|promote|rollback` (which write it).

    switchyard:{models}:<model>:rollout  -> JSON Rollout (no TTL)
    channel switchyard:rollouts          -> "<model>" whenever its record changed

The `{models}` hash tag keeps every record in one slot of a Redis Cluster, so a router reads
them all with one MGET. No record means the default: every router follows the newest version
Triton serves. A canary gives each text to the candidate or the stable version by a hash of
the model and the normalised text, so one text sees one version on every router for the whole
canary.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from services.contracts.text import normalize_text

__all__ = ["ROLLOUTS_CHANNEL", "Rollout", "canary_share", "rollout_key"]

ROLLOUTS_CHANNEL = "switchyard:rollouts"


def rollout_key(model: str) -> str:
    return f"switchyard:{{models}}:{model}:rollout"


def canary_share(model: str, text: str) -> float:
    """Where `text` falls in [0, 1): below a canary's weight, the candidate answers it."""
    digest = hashlib.blake2b(
        normalize_text(text).encode("utf-8"), digest_size=8, key=model.encode("utf-8")[:64]
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Rollout:
    stable: str = ""
    """The version pinned to answer; empty: the newest version Triton serves."""
    candidate: str = ""
    """A version on canary or shadow beside the stable one; empty: none."""
    weight: float = 0.0
    """Share of texts the candidate answers (by `canary_share`)."""
    shadow: float = 0.0
    """Share of the stable version's answers also asked of the candidate, off the request
    path, to measure how often the two agree."""
    previous: str = ""
    """The stable version before the last promote, for `rollback`."""
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        for name in ("weight", "shadow"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in ("stable", "candidate", "previous"):
            value = getattr(self, name)
            if value and not value.isdigit():
                raise ValueError(f"{name} must be a version number, got {value!r}")
        if (self.weight or self.shadow) and not self.candidate:
            raise ValueError("a canary weight or a shadow share needs a candidate version")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, value: str | bytes) -> "Rollout":
        """The record, or ValueError when it is not one."""
        try:
            data = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, str | float] = {}
        for field in fields(cls):
            if field.name not in data:
                continue
            value = data[field.name]
            if (
                field.type is float
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                values[field.name] = float(value)
            elif field.type is str and isinstance(value, str):
                values[field.name] = value
            else:
                raise ValueError(f"{field.name} has the wrong type: {value!r}")
        return cls(**values)  # type: ignore[arg-type]
