"""The model route: the distilled student on Triton, called with tritonclient's asyncio client.

Texts are tokenised here with the `tokenizer.json` of the version Triton serves and padded
to a few length buckets, so Triton's dynamic batcher can merge requests of equal shape.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from router.answers import ModelAnswer
from router.errors import DeadlineExceeded, DependencyUnavailable
from services.contracts.model_io import OUTPUT_NAME, TextEncoder, softmax
from services.contracts.model_repository import ModelVersion, version_dirs

__all__ = ["ServedModel", "StudentClient", "VersionChange"]

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
# tritonclient reports a gRPC status as the text of grpc's StatusCode.
_DEADLINE_STATUS = str(grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class ServedModel:
    """One version of a student model as the model repository describes it."""

    name: str
    version: str
    labels: list[str]
    encoder: TextEncoder

    @classmethod
    def load(cls, files: ModelVersion) -> "ServedModel":
        return cls(
            name=files.model,
            version=files.version,
            labels=files.labels(),
            encoder=TextEncoder.from_file(files.tokenizer_file, files.card().inputs),
        )


@dataclass(frozen=True)
class VersionChange:
    """What `StudentClient.follow_versions` did about one model."""

    model: str
    version: str
    previous: str = ""
    problem: str = ""
    """Set when `version` could not be served (its files do not load); nothing switched."""


class StudentClient:
    def __init__(self, url: str, repository: Path, timeout_s: float, buckets: list[int]) -> None:
        self._client = triton_aio.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
        self._repository = repository
        self._timeout_s = timeout_s
        self._buckets = sorted(buckets)
        self._models: dict[str, ServedModel] = {}
        # Versions whose files did not load, with their folder's change time when they failed.
        self._broken: dict[tuple[str, str], int] = {}

    async def load(self, model_names: Sequence[str]) -> None:
        """Pick each model's newest version that Triton serves (or the repository's newest)."""
        for name in model_names:
            versions = [path.name for path in version_dirs(self._repository / name)]
            if not versions:
                raise FileNotFoundError(f"no version of model {name!r} in {self._repository}")
            served = versions[-1]
            try:
                metadata = await self._client.get_model_metadata(name, as_json=True)
                available = [v for v in metadata.get("versions", []) if v in versions]
                served = max(available, key=int) if available else served
            except InferenceServerException:
                pass  # Triton not up yet: serve what the repository holds.
            files = ModelVersion.of(self._repository, name, served)
            self._models[name] = ServedModel.load(files)

    def model(self, name: str) -> ServedModel:
        return self._models[name]

    async def follow_versions(self) -> list[VersionChange]:
        """Move each model to the newest version of the repository that Triton reports READY
        and whose files load here; a version that is not ready, or broken, is never used and
        the current one keeps serving. One assignment per switch: a request uses the old
        version or the new one, and its answer names the one that computed it."""
        changes = []
        for name, current in list(self._models.items()):
            for folder in reversed(version_dirs(self._repository / name)):
                version = folder.name
                if version != current.version and self._still_broken(name, folder):
                    continue
                if not await self._version_ready(name, version):
                    continue
                if version == current.version:
                    break
                try:
                    served = ServedModel.load(ModelVersion.of(self._repository, name, version))
                except Exception as exc:  # tokenizers and json raise many kinds
                    self._broken[(name, version)] = folder.stat().st_mtime_ns
                    changes.append(VersionChange(name, version, current.version, str(exc)))
                    continue
                self._models[name] = served
                changes.append(VersionChange(name, version, current.version))
                break
        return changes

    def _still_broken(self, name: str, folder: Path) -> bool:
        failed_at = self._broken.get((name, folder.name))
        try:
            return failed_at is not None and folder.stat().st_mtime_ns == failed_at
        except OSError:
            return True

    async def _version_ready(self, name: str, version: str) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.is_model_ready(name, version), 2.0))
        except (InferenceServerException, TimeoutError, OSError):
            return False

    @property
    def loaded(self) -> set[str]:
        """The models `load` has loaded."""
        return set(self._models)

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
        """The model's inputs for `texts`, padded to a length bucket."""
        inputs = []
        for name, array in model.encoder.encode(texts, self._buckets).items():
            tensor = InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    async def classify(
        self, name: str, texts: Sequence[str], timeout_s: float
    ) -> tuple[ServedModel, list[ModelAnswer]]:
        model = self._models[name]
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
            if exc.status() == _DEADLINE_STATUS:
                raise DeadlineExceeded(
                    f"the model did not answer within {budget * 1000:.0f} ms"
                ) from None
            raise DependencyUnavailable(f"triton could not run the model: {exc.message()}") from exc
        answers = []
        for row in softmax(result.as_numpy(OUTPUT_NAME)):
            best = int(row.argmax())
            scores = {label: float(p) for label, p in zip(model.labels, row, strict=True)}
            answers.append(ModelAnswer(model.labels[best], float(row[best]), scores))
        return model, answers
