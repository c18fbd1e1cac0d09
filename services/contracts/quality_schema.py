"""How much of the teacher's quality live traffic gets: the router's sample of the student's
answers, and the record of what the teacher said about them.

The router appends a share of its model-route answers to a capped Redis stream
(`cache_schema.quality_samples_key`), one `QualitySample` per entry. `switchyard quality
score` has the teacher label them and stores a `QualityRecord` (`quality_record_key`): per
student version, how many sampled answers the teacher agreed with, and the 95% Wilson
interval of that share. Both layouts are owned here.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AGREEMENT_GAUGES",
    "QualityRecord",
    "QualitySample",
    "VersionAgreement",
    "wilson_interval",
]

_Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def wilson_interval(agreed: int, total: int, z: float = _Z_95) -> tuple[float, float]:
    """The Wilson score interval of the share `agreed / total` (95% by default): unlike the
    normal approximation it stays within [0, 1] and is honest for small samples and for shares
    near 0 or 1. (0, 1) when nothing was sampled."""
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= agreed <= total:
        raise ValueError(f"agreed must be within [0, {total}], got {agreed}")
    share = agreed / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class QualitySample:
    """One model-route answer as the router gave it."""

    text: str
    label: str
    scores: dict[str, float]
    model: str
    model_version: str
    answered_at: float

    def to_fields(self) -> dict[str, str]:
        return {
            "text": self.text,
            "label": self.label,
            "scores": _ENCODER.encode(self.scores),
            "model": self.model,
            "model_version": self.model_version,
            "answered_at": repr(self.answered_at),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> "QualitySample":
        """A stream entry's sample; ValueError for an entry that is not one."""
        try:
            values = {key.decode(): value.decode() for key, value in fields.items()}
            scores = json.loads(values["scores"])
            return cls(
                text=values["text"],
                label=values["label"],
                scores={str(name): float(score) for name, score in scores.items()},
                model=values["model"],
                model_version=values["model_version"],
                answered_at=float(values["answered_at"]),
            )
        except (UnicodeDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a quality sample: {type(exc).__name__}") from None


# The gauges (name, help) that show a scored version, both on routers and in the scoring
# job's textfile, in the order of VersionAgreement.gauge_values().
AGREEMENT_GAUGES: tuple[tuple[str, str], ...] = (
    (
        "switchyard_quality_student_agreement",
        "Share of the sampled model-route answers the teacher agreed with, at the last "
        "`switchyard quality score`.",
    ),
    ("switchyard_quality_student_agreement_low", "Lower end of that share's 95% Wilson interval."),
    ("switchyard_quality_student_agreement_high", "Upper end of that share's 95% Wilson interval."),
    ("switchyard_quality_scored_samples", "Sampled answers the last scoring judged."),
)


@dataclass(frozen=True)
class VersionAgreement:
    """How often the teacher agreed with one student version on the sampled answers."""

    model: str
    model_version: str
    samples: int
    agreed: int

    @property
    def agreement(self) -> float:
        return self.agreed / self.samples if self.samples else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.agreed, self.samples)

    def gauge_values(self) -> tuple[float, float, float, float]:
        """The values of AGREEMENT_GAUGES, in their order."""
        low, high = self.interval
        return self.agreement, low, high, self.samples


@dataclass(frozen=True)
class QualityRecord:
    """The last scoring of a namespace's sample: the teacher that judged, when, and each
    student version's agreement with it."""

    task: str
    teacher: str
    scored_at: float
    versions: list[VersionAgreement] = field(default_factory=list)

    def to_json(self) -> str:
        return _ENCODER.encode(
            {
                "task": self.task,
                "teacher": self.teacher,
                "scored_at": self.scored_at,
                "versions": [
                    {
                        "model": version.model,
                        "model_version": version.model_version,
                        "samples": version.samples,
                        "agreed": version.agreed,
                    }
                    for version in self.versions
                ],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> "QualityRecord":
        """A stored record; ValueError for anything else."""
        try:
            data = json.loads(raw)
            versions = [
                VersionAgreement(
                    model=str(entry["model"]),
                    model_version=str(entry["model_version"]),
                    samples=int(entry["samples"]),
                    agreed=int(entry["agreed"]),
                )
                for entry in data["versions"]
            ]
            record = cls(
                str(data["task"]), str(data["teacher"]), float(data["scored_at"]), versions
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ValueError(f"malformed quality record: {type(exc).__name__}") from None
        if any(not 0 <= v.agreed <= v.samples for v in record.versions):
            raise ValueError("malformed quality record: more agreed than sampled")
        return record
