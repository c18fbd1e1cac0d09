"""One chunk of texts through the teacher and into the generation: the step both engines
repeat, so both write the same predictions."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.batch.labels import Labeller, LabelSource
from services.batch.store import GenerationStore
from services.contracts.cache_schema import CachedPrediction

__all__ = ["LabelCounts", "label_and_write"]


@dataclass
class LabelCounts:
    """What an engine's labelling pass did: texts labelled and written, texts the generation
    already held (an earlier attempt wrote them), and the seconds it took."""

    written: int = 0
    resumed: int = 0
    seconds: float = 0.0


def label_and_write(
    teacher: LabelSource,
    labeller: Labeller,
    store: GenerationStore,
    generation: str,
    chunk: Sequence[tuple[str, str]],
) -> None:
    """Label the (digest, normalised text) pairs of `chunk` and store them in `generation`."""
    labelled = labeller.label([text for _, text in chunk])
    now = time.time()
    store.write(
        generation,
        [
            (
                digest,
                CachedPrediction(
                    label=result.label,
                    scores=result.scores,
                    model=teacher.model_name,
                    model_version=teacher.version,
                    created_at=now,
                ).to_json(),
            )
            for (digest, _), result in zip(chunk, labelled, strict=True)
        ],
    )
