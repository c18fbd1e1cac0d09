"""The model route: the distilled student on Triton, called with tritonclient's asyncio client.

Texts are tokenised here with the `tokenizer.json` of the version Triton serves. Concurrent
requests' texts for one version share calls (`router.batching`), padded to the call's longest
text, or to the next of the `length_buckets` when those are set (for GPU instances, where
Triton's dynamic batcher merges requests of equal shape). Triton's CPU runner trims every row
back to its own tokens, so on CPU the padding costs nothing.
"""

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry import trace
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from router.answers import ModelAnswer
from router.batching import CallBatcher
from router.errors import DeadlineExceeded, DependencyUnavailable
from router.replicas import TritonReplicas
from router.rollout import Serving
from router.tracing import NO_TRACER
from services.contracts.model_io import OUTPUT_NAME, TextEncoder, softmax
from services.contracts.model_repository import (
    CONFIG_FILE,
    ModelVersion,
    parse_config,
    version_dirs,
)
from services.contracts.rollout_schema import Rollout

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
    max_batch: int
    """The most texts one call may carry: the config's max_batch_size."""

    @classmethod
    def load(cls, files: ModelVersion) -> "ServedModel":
        config = parse_config((files.path.parent / CONFIG_FILE).read_text(encoding="utf-8"))
        return cls(
            name=files.model,
            version=files.version,
            labels=files.labels(),
            encoder=TextEncoder.from_file(files.tokenizer_file, files.card().inputs),
            max_batch=max(1, config.max_batch_size),
        )


@dataclass(frozen=True)
class VersionChange:
    """What `StudentClient.follow_versions` did about one model, or found wrong with one of
    its versions (`problem`: that version is not used, the current ones keep serving)."""

    model: str
    version: str
    description: str
    problem: bool = False


class StudentClient:
    def __init__(
        self,
        url: str,
        repository: Path,
        timeout_s: float,
        buckets: list[int],
        ready_timeout_s: float = 60.0,
        calls_in_flight: int = 4,
        tracer: trace.Tracer = NO_TRACER,
    ) -> None:
        """`calls_in_flight`: calls of one version open at once per replica; texts that come
        while all are open share the next call."""
        # A replica that leaves is closed after the longest call it may still hold.
        self.replicas = TritonReplicas(url, _CHANNEL_ARGS, drain_s=timeout_s + 5.0, tracer=tracer)
        self._repository = repository
        self._timeout_s = timeout_s
        self._buckets = sorted(buckets)
        self._ready_timeout_s = ready_timeout_s
        self._calls_in_flight = calls_in_flight
        self._batchers: dict[tuple[str, str], CallBatcher[str, ModelAnswer]] = {}
        self._serving: dict[str, Serving[ServedModel]] = {}
        # Versions whose files did not load: their folder's change time then, and why.
        self._broken: dict[tuple[str, str], tuple[int, str]] = {}
        # Versions wanted but not READY in Triton, since when (monotonic clock).
        self._unready_since: dict[tuple[str, str], float] = {}
        # What keeps each model's wanted versions from serving, by version.
        self._problems: dict[str, dict[str, str]] = {}

    async def load(self, model_names: Sequence[str]) -> None:
        """Pick each model's newest version that Triton serves and whose files load (the
        repository's newest that loads, while Triton is not up); a version that does not load
        is remembered as broken, so a router started during a bad rollout still serves."""
        await self.replicas.resolve()
        for name in model_names:
            versions = [path.name for path in version_dirs(self._repository / name)]
            if not versions:
                raise FileNotFoundError(f"no version of model {name!r} in {self._repository}")
            served: list[str] = []
            try:
                metadata = await self.replicas.metadata(name)
                served = [v for v in metadata.get("versions", []) if v in versions]
            except InferenceServerException:
                pass  # Triton not up yet: serve what the repository holds.
            order = sorted(served, key=int, reverse=True) or list(reversed(versions))
            problems = []
            for version in order:
                folder = self._repository / name / version
                try:
                    model = ServedModel.load(ModelVersion.of(self._repository, name, version))
                except Exception as exc:  # tokenizers and json raise many kinds
                    problem = f"its files do not load: {exc}"
                    self._broken[(name, version)] = (_changed_at(folder), problem)
                    problems.append(f"version {version}: {problem}")
                    continue
                self._serving[name] = Serving(model)
                break
            else:
                raise ValueError(f"no version of model {name!r} loads: {'; '.join(problems)}")

    def model(self, name: str) -> ServedModel:
        """The stable version of a model."""
        return self._serving[name].stable

    def serving(self, name: str) -> Serving[ServedModel]:
        return self._serving[name]

    def problems(self, name: str) -> list[str]:
        """Why versions the model should serve do not, one line each."""
        found = self._problems.get(name, {})
        return [f"version {version}: {problem}" for version, problem in sorted(found.items())]

    async def follow_versions(self, rollouts: Mapping[str, Rollout]) -> list[VersionChange]:
        """Move each model to what its rollout record asks, using only versions Triton
        reports READY and whose files load here; with no record, to the newest such version.
        A version that is not ready, or broken, is never used and the current ones keep
        serving. One assignment per switch: a request uses the old versions or the new ones,
        and its answer names the one that computed it."""
        changes: list[VersionChange] = []
        for name, current in list(self._serving.items()):
            rollout = rollouts.get(name, Rollout())
            versions = [folder.name for folder in version_dirs(self._repository / name)]
            ready = await self._ready_versions(name, versions)
            found: dict[str, str] = {}
            usable = _Usable(self, name, versions, ready, current, found)
            stable = await usable.pinned(rollout.stable) if rollout.stable else None
            if stable is None and rollout.stable and current.stable.version in ready:
                stable = current.stable
            if stable is None:
                # Never the candidate: a canary's stable version must not become it.
                stable = await usable.newest(exclude=rollout.candidate) or current.stable
            candidate = None
            if rollout.candidate and rollout.candidate != stable.version:
                candidate = await usable.pinned(rollout.candidate)
            serving = Serving(
                stable,
                candidate,
                rollout.weight if candidate else 0.0,
                rollout.shadow if candidate else 0.0,
            )
            for version, problem in sorted(found.items()):
                if self._problems.get(name, {}).get(version) != problem:
                    changes.append(VersionChange(name, version, problem, problem=True))
            self._problems[name] = found
            for key in [k for k in self._unready_since if k[0] == name]:
                if key[1] not in usable.examined:
                    del self._unready_since[key]  # no longer wanted: its wait starts anew
            if serving.versions != current.versions:
                self._serving[name] = serving
                self._forget_batchers(name, serving)
                changes.append(VersionChange(name, stable.version, _describe(serving, current)))
        return changes

    def _forget_batchers(self, name: str, serving: Serving[ServedModel]) -> None:
        """Drop the batchers of versions that no longer serve (their calls in flight end)."""
        kept = {model.version for model in (serving.stable, serving.candidate) if model}
        for key in [k for k in self._batchers if k[0] == name and k[1] not in kept]:
            del self._batchers[key]

    async def _ready_versions(self, name: str, versions: Sequence[str]) -> set[str]:
        ready = await asyncio.gather(*(self._version_ready(name, v) for v in versions))
        return {version for version, up in zip(versions, ready, strict=True) if up}

    async def _version_ready(self, name: str, version: str) -> bool:
        """Whether a replica serves the version (calls of it go only to those that do)."""
        return await self.replicas.ready_on(name, version) > 0

    @property
    def loaded(self) -> set[str]:
        """The models `load` has loaded."""
        return set(self._serving)

    async def close(self) -> None:
        await self.replicas.close()

    async def is_ready(self, model_names: Sequence[str]) -> bool:
        """Whether some replica serves each of the models."""
        ready = await asyncio.gather(*(self.replicas.ready_on(name) for name in model_names))
        return all(ready)

    def encode(self, model: ServedModel, texts: Sequence[str]) -> list[InferInput]:
        """The model's inputs for `texts`, padded to the longest (or its length bucket)."""
        inputs = []
        for name, array in model.encoder.encode(texts, self._buckets).items():
            tensor = InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    async def classify(
        self, model: ServedModel, texts: Sequence[str], timeout_s: float
    ) -> list[ModelAnswer]:
        """One answer per text, within `timeout_s` (and the client's Triton timeout)."""
        budget = min(timeout_s, self._timeout_s)
        if budget <= 0:
            raise DeadlineExceeded("the deadline ran out before the model could be called")
        try:
            async with asyncio.timeout(budget):
                return await self._batcher(model).submit(list(texts), budget)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the model did not answer within {budget * 1000:.0f} ms"
            ) from None

    def _batcher(self, model: ServedModel) -> CallBatcher[str, ModelAnswer]:
        key = (model.name, model.version)
        batcher = self._batchers.get(key)
        if batcher is None:

            async def call(texts: list[str], budget: float) -> list[ModelAnswer]:
                return await self._infer(model, texts, budget)

            batcher = CallBatcher(
                call,
                model.max_batch,
                lambda: self._calls_in_flight * max(1, len(self.replicas.addresses)),
            )
            self._batchers[key] = batcher
        return batcher

    async def _infer(
        self, model: ServedModel, texts: list[str], budget: float
    ) -> list[ModelAnswer]:
        """One Triton call for `texts`."""
        if budget <= 0:
            raise DeadlineExceeded("the deadline ran out before the model could be called")
        try:
            async with asyncio.timeout(budget):
                result = await self.replicas.infer(
                    model.name, model.version, self.encode(model, texts), budget
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
        return answers


class _Usable:
    """One pass of `StudentClient.follow_versions` over one model: which of its versions
    may serve, and what is wrong with the ones that may not (into `problems`)."""

    def __init__(
        self,
        client: StudentClient,
        name: str,
        versions: list[str],
        ready: set[str],
        current: Serving[ServedModel],
        problems: dict[str, str],
    ) -> None:
        self._client = client
        self._name = name
        self._versions = versions
        self._ready = ready
        self._current = current
        self._problems = problems
        self.examined: set[str] = set()
        """The versions this pass looked at."""

    async def pinned(self, version: str) -> ServedModel | None:
        if version not in self._versions:
            self._problems[version] = "not in the model repository"
            return None
        return await self._load(version, waited=True)

    async def newest(self, exclude: str = "") -> ServedModel | None:
        """The newest usable version (other than `exclude`) no older than the current stable
        one; an older one only once Triton no longer serves the current one."""
        current = self._current.stable.version
        for version in reversed(self._versions):
            if int(version) < int(current) and current in self._ready:
                break
            if version == exclude:
                continue
            model = await self._load(version, waited=version != self._current.stable.version)
            if model is not None:
                return model
        return None

    async def _load(self, version: str, waited: bool) -> ServedModel | None:
        """The version's files, once Triton reports it READY; `waited`: a version that stays
        not ready past the client's ready timeout is a problem."""
        client, key = self._client, (self._name, version)
        self.examined.add(version)
        folder = client._repository / self._name / version
        broken = client._broken.get(key)
        if broken is not None:
            if _changed_at(folder) == broken[0]:
                self._problems[version] = broken[1]
                return None
            del client._broken[key]
        if version not in self._ready:
            since = client._unready_since.setdefault(key, time.monotonic())
            if waited and time.monotonic() - since >= client._ready_timeout_s:
                self._problems[version] = (
                    f"Triton has not reported it READY for {client._ready_timeout_s:.0f} s"
                )
            return None
        client._unready_since.pop(key, None)
        for loaded in (self._current.stable, self._current.candidate):
            if loaded is not None and loaded.version == version:
                return loaded
        try:
            return ServedModel.load(ModelVersion.of(client._repository, self._name, version))
        except Exception as exc:  # tokenizers and json raise many kinds
            problem = f"its files do not load: {exc}"
            client._broken[key] = (_changed_at(folder), problem)
            self._problems[version] = problem
            return None


def _changed_at(folder: Path) -> int:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return 0


def _describe(serving: Serving[ServedModel], before: Serving[ServedModel]) -> str:
    text = f"version {serving.stable.version} answers (was {before.stable.version})"
    if serving.candidate is not None:
        text += (
            f"; candidate version {serving.candidate.version} takes {serving.weight:.0%} of "
            f"the texts and shadows {serving.shadow:.0%} of the rest"
        )
    return text
