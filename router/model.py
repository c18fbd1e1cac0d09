"""The model route: the distilled student on Triton, called with tritonclient's asyncio client.

Texts are tokenised here with the `tokenizer.json` of the version Triton serves and padded
to a few length buckets, so Triton's dynamic batcher can merge requests of equal shape.
"""

import asyncio
import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton_aio
from tokenizers import Tokenizer
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from router.errors import DeadlineExceeded, DependencyUnavailable

__all__ = ["ModelAnswer", "ServedModel", "StudentClient"]

_CHANNEL_ARGS = [
    # grpc's default reconnect backoff grows to 120 s; a restarted Triton should get traffic
    # again within a second.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


@dataclass(frozen=True)
class ModelAnswer:
    label: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True)
class ServedModel:
    """One version of a student model as the model repository describes it."""

    name: str
    version: str
    labels: list[str]
    input_names: list[str]
    tokenizer: Tokenizer
    pad_id: int
    max_length: int

    @classmethod
    def load(cls, repository: Path, name: str, version: str) -> "ServedModel":
        version_dir = repository / name / version
        card = json.loads((version_dir / "model_card.json").read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        pad_id = (tokenizer.padding or {}).get("pad_id", 0)
        truncation = tokenizer.truncation or {}
        tokenizer.no_padding()
        return cls(
            name=name,
            version=version,
            labels=json.loads((version_dir / "labels.json").read_text(encoding="utf-8")),
            input_names=list(card["inputs"]),
            tokenizer=tokenizer,
            pad_id=int(pad_id),
            max_length=int(truncation.get("max_length", card.get("max_length", 128))),
        )


def _softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: npt.NDArray[np.float32] = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


class StudentClient:
    def __init__(self, url: str, repository: Path, timeout_s: float, buckets: list[int]) -> None:
        self._client = triton_aio.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
        self._repository = repository
        self._timeout_s = timeout_s
        self._buckets = sorted(buckets)
        self.models: dict[str, ServedModel] = {}

    async def load(self, model_names: Sequence[str]) -> None:
        """Pick each model's newest version that Triton serves (or the repository's newest)."""
        for name in model_names:
            versions = sorted(
                (p.name for p in (self._repository / name).iterdir() if p.name.isdigit()), key=int
            )
            if not versions:
                raise FileNotFoundError(f"no version of model {name!r} in {self._repository}")
            served = versions[-1]
            try:
                metadata = await self._client.get_model_metadata(name, as_json=True)
                available = [v for v in metadata.get("versions", []) if v in versions]
                served = max(available, key=int) if available else served
            except InferenceServerException:
                pass  # Triton not up yet: serve what the repository holds.
            self.models[name] = ServedModel.load(self._repository, name, served)

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, model_names: Sequence[str]) -> bool:
        try:
            ready = await asyncio.wait_for(
                asyncio.gather(*(self._client.is_model_ready(n) for n in model_names)), 2.0
            )
        except (InferenceServerException, TimeoutError, OSError):
            return False
        return all(ready)

    def encode(self, model: ServedModel, texts: Sequence[str]) -> list[InferInput]:
        encodings = model.tokenizer.encode_batch(list(texts))
        longest = max(len(e.ids) for e in encodings)
        index = bisect.bisect_left(self._buckets, longest)
        length = self._buckets[index] if index < len(self._buckets) else model.max_length
        length = min(max(length, longest), model.max_length)
        arrays = {
            "input_ids": np.full((len(texts), length), model.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(texts), length), dtype=np.int64),
            "token_type_ids": np.zeros((len(texts), length), dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            arrays["input_ids"][row, : len(encoding.ids)] = encoding.ids
            arrays["attention_mask"][row, : len(encoding.ids)] = 1
        inputs = []
        for name in model.input_names:
            tensor = InferInput(name, list(arrays[name].shape), "INT64")
            tensor.set_data_from_numpy(arrays[name])
            inputs.append(tensor)
        return inputs

    async def classify(
        self, model_name: str, texts: Sequence[str], timeout_s: float
    ) -> tuple[ServedModel, list[ModelAnswer]]:
        model = self.models[model_name]
        budget = min(timeout_s, self._timeout_s)
        if budget <= 0:
            raise DeadlineExceeded("the deadline ran out before the model could be called")
        try:
            async with asyncio.timeout(budget):
                result = await self._client.infer(
                    model.name,
                    self.encode(model, texts),
                    model_version=model.version,
                    client_timeout=budget,
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"the model did not answer within {budget * 1000:.0f} ms"
            ) from None
        except InferenceServerException as exc:
            if "Deadline" in str(exc.status()) or "deadline" in str(exc.message()).lower():
                raise DeadlineExceeded(
                    f"the model did not answer within {budget * 1000:.0f} ms"
                ) from None
            raise DependencyUnavailable(f"triton could not run the model: {exc.message()}") from exc
        probabilities = _softmax(result.as_numpy("logits"))
        answers = []
        for row in probabilities:
            best = int(row.argmax())
            scores = {label: float(p) for label, p in zip(model.labels, row, strict=True)}
            answers.append(ModelAnswer(model.labels[best], float(row[best]), scores))
        return model, answers
