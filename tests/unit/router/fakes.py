"""Stand-ins for the model side of the router, so its request path runs in-process: a student
that answers without Triton, an in-process server speaking Triton's gRPC protocol (KServe v2),
and a model repository with a real tokenizer but no model file.

The real Triton and the real student are the integration tier's (tests/integration)."""

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from tritonclient.grpc import service_pb2, service_pb2_grpc

from router.answers import ModelAnswer
from router.errors import DependencyUnavailable, RouterError
from router.rollout import Serving
from services.contracts.build_report import ServingRecord
from services.contracts.model_repository import (
    CARD_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    TOKENIZER_FILE,
    ModelCard,
    render_config,
)
from services.pipeline.repository import student_config

TOPIC_LABELS = ["business", "entertainment", "politics", "sports", "tech"]
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
LABELS = {"topic": TOPIC_LABELS, "sentiment": SENTIMENT_LABELS}
VOCABULARY = ["[PAD]", "[UNK]", "oil", "prices", "climb", "the", "film", "opens", "a", "match"]


@dataclass(frozen=True)
class FakeModel:
    name: str
    version: str
    labels: list[str]


def fake_label(labels: Sequence[str], text: str) -> str:
    """The label the stand-ins give `text`: stable, and different across texts."""
    return labels[zlib.crc32(text.encode()) % len(labels)]


@dataclass
class FakeStudent:
    """The `router.routing.Student` protocol without Triton: each text gets `fake_label` with
    probability `score`, after `delay_s`; `failures` are raised, one per call, before it
    answers again, and `failing_versions` fail every call of theirs. `candidate`, `weight`
    and `shadow` set up a canary beside the stable `version`."""

    score: float = 0.9
    version: str = "3"
    delay_s: float = 0.0
    failures: list[BaseException] = field(default_factory=list)
    calls: list[tuple[str, str, list[str], float]] = field(default_factory=list)
    """(model, version, texts, timeout) of each call."""
    candidate: str = ""
    weight: float = 0.0
    shadow: float = 0.0
    failing_versions: set[str] = field(default_factory=set)
    problems_of: dict[str, list[str]] = field(default_factory=dict)

    def serving(self, name: str) -> Serving[FakeModel]:
        candidate = FakeModel(name, self.candidate, LABELS[name]) if self.candidate else None
        return Serving(
            FakeModel(name, self.version, LABELS[name]), candidate, self.weight, self.shadow
        )

    def problems(self, name: str) -> list[str]:
        return self.problems_of.get(name, [])

    async def classify(
        self, model: FakeModel, texts: Sequence[str], timeout_s: float
    ) -> list[ModelAnswer]:
        self.calls.append((model.name, model.version, list(texts), timeout_s))
        await asyncio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)
        if model.version in self.failing_versions:
            raise DependencyUnavailable(f"version {model.version} is broken")
        rest = (1 - self.score) / (len(model.labels) - 1)
        answers = []
        for text in texts:
            label = fake_label(model.labels, text)
            scores = {other: self.score if other == label else rest for other in model.labels}
            answers.append(ModelAnswer(label, self.score, scores))
        return answers


class Boom(RouterError):
    """A domain error the status table does not name, to check the fallback."""


def write_model_repository(
    root: Path,
    versions: Sequence[str] = ("1", "3"),
    labels_of: Mapping[str, list[str]] = LABELS,
    serving: ServingRecord | None = None,
) -> Path:
    """A repository with the tasks of `labels_of`, each version holding a real tokenizer (word
    level, max length 16, [PAD] = 0), its labels and a card (with `serving` when given); no
    model file: the router never reads it."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCABULARY)}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_truncation(max_length=16)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    for task, labels in labels_of.items():
        (root / task).mkdir(parents=True)
        config = student_config(task, ["input_ids", "attention_mask"], len(labels), ServingRecord())
        (root / task / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")
        for version in versions:
            folder = root / task / version
            folder.mkdir()
            tokenizer.save(str(folder / TOKENIZER_FILE))
            (folder / LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")
            card = ModelCard(
                task=task,
                version=version,
                inputs=["input_ids", "attention_mask"],
                max_length=16,
                serving=serving,
            )
            (folder / CARD_FILE).write_text(card.model_dump_json(), encoding="utf-8")
    return root


def fake_logits(input_ids: np.ndarray, labels: int) -> np.ndarray:
    """Logits that depend on the tokens: the token id sum picks the winning class."""
    logits = np.zeros((input_ids.shape[0], labels), dtype=np.float32)
    winners = input_ids.sum(axis=1) % labels
    logits[np.arange(input_ids.shape[0]), winners] = 4.0
    return logits


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC protocol for the calls the router makes: model metadata and readiness,
    and inference returning `fake_logits`. `delay_s` stalls each inference and
    `ready_delay_s` each readiness check; `fail_with` makes inferences fail with that code."""

    def __init__(self, served_versions: Sequence[str]) -> None:
        self.served_versions = list(served_versions)
        self.labels = dict(LABELS)
        """The models it serves, with their labels; a test may add one."""
        self.delay_s = 0.0
        self.ready_delay_s = 0.0
        self.fail_with: grpc.StatusCode | None = None
        self.requests: list[service_pb2.ModelInferRequest] = []
        self.metadata: list[dict[str, str]] = []
        """The gRPC metadata of each inference (a traced call's traceparent)."""
        self.server: grpc.aio.Server | None = None
        """Set by `serving_triton`; a test may stop it, as a replica that dies."""

    async def ModelMetadata(  # noqa: N802 - the RPC's name
        self, request: service_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelMetadataResponse:
        if request.name not in self.labels:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=self.served_versions, platform="onnxruntime_onnx"
        )

    async def ModelReady(  # noqa: N802 - the RPC's name
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelReadyResponse:
        await asyncio.sleep(self.ready_delay_s)
        served = not request.version or request.version in self.served_versions
        return service_pb2.ModelReadyResponse(ready=request.name in self.labels and served)

    async def ModelInfer(  # noqa: N802 - the RPC's name
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        self.requests.append(request)
        self.metadata.append({key: str(value) for key, value in context.invocation_metadata()})
        if request.model_version and request.model_version not in self.served_versions:
            # What Triton says for a version it has unloaded.
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"Request for unknown model: '{request.model_name}' version "
                f"{request.model_version} is not found",
            )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            await context.abort(self.fail_with, "the fake Triton was told to fail")
        position = [tensor.name for tensor in request.inputs].index("input_ids")
        shape = list(request.inputs[position].shape)
        ids = np.frombuffer(request.raw_input_contents[position], dtype=np.int64).reshape(shape)
        logits = fake_logits(ids, len(self.labels[request.model_name]))
        output = service_pb2.ModelInferResponse.InferOutputTensor(
            name="logits", datatype="FP32", shape=list(logits.shape)
        )
        return service_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=request.model_version,
            outputs=[output],
            raw_output_contents=[logits.tobytes()],
        )


@asynccontextmanager
async def serving_triton(
    served_versions: Sequence[str], host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[FakeTriton, str]]:
    """A FakeTriton on `host` (a free port unless given), and its address."""
    triton = FakeTriton(served_versions)
    server = triton.server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(triton, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    try:
        yield triton, f"{host}:{bound}"
    finally:
        await server.stop(0)
