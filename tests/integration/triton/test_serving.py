"""The shared Triton: results, dynamic batching, metrics and errors, over real gRPC and HTTP."""

import asyncio
import json
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from services.contracts.model_repository import CONFIG_FILE, parse_config, render_config
from services.pipeline.datasets import load_splits
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.triton.server import TritonServer, TritonSettings

Inputs = dict[str, np.ndarray]


def _client(server: TritonServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.settings.grpc_port}")


def _triton_inputs(inputs: Inputs, module: object = grpcclient) -> list[grpcclient.InferInput]:
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), "INT64")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _classifier(build: Path, task: str) -> OnnxTextClassifier:
    version = build / "model_repository" / task / "1"
    return OnnxTextClassifier(version / "model.onnx", version / "tokenizer.json")


def _texts(build: Path, task: str, count: int) -> list[str]:
    return [e.text for e in load_splits(build / "work" / task / "data").test[:count]]


@pytest.mark.parametrize("task", ["topic", "sentiment"])
def test_sync_grpc_equals_onnxruntime_in_process(
    triton: TritonServer, tiny_build: Path, task: str
) -> None:
    classifier = _classifier(tiny_build, task)
    client = _client(triton)
    assert client.is_server_ready()
    for text in _texts(tiny_build, task, 5):
        inputs = classifier.encode([text])
        result = client.infer(task, _triton_inputs(inputs))
        np.testing.assert_allclose(result.as_numpy("logits"), classifier.run(inputs), atol=1e-5)
    batch = classifier.encode(_texts(tiny_build, task, 4))
    result = client.infer(task, _triton_inputs(batch))
    np.testing.assert_allclose(result.as_numpy("logits"), classifier.run(batch), atol=1e-5)


def test_aio_grpc_equals_onnxruntime_in_process(triton: TritonServer, tiny_build: Path) -> None:
    classifier = _classifier(tiny_build, "topic")
    texts = _texts(tiny_build, "topic", 6)

    async def infer_all() -> list[np.ndarray]:
        client = grpcclient_aio.InferenceServerClient(f"127.0.0.1:{triton.settings.grpc_port}")
        try:
            results = await asyncio.gather(
                *(
                    client.infer("topic", _triton_inputs(classifier.encode([t]), grpcclient_aio))
                    for t in texts
                )
            )
        finally:
            await client.close()
        return [result.as_numpy("logits") for result in results]

    for text, logits in zip(texts, asyncio.run(infer_all()), strict=True):
        np.testing.assert_allclose(logits, classifier.logits([text]), atol=1e-5)


def test_padded_rows_answer_as_each_text_alone(triton: TritonServer, tiny_build: Path) -> None:
    """The CPU runner trims every row to its tokens and runs equal lengths together: a call
    padded far past its longest text, mixing lengths, answers each row as the text alone."""
    classifier = _classifier(tiny_build, "topic")
    texts = _texts(tiny_build, "topic", 8)
    alone = np.concatenate([classifier.logits([text]) for text in texts])
    padded = {
        name: np.pad(array, ((0, 0), (0, 40))) for name, array in classifier.encode(texts).items()
    }
    result = _client(triton).infer("topic", _triton_inputs(padded))
    np.testing.assert_allclose(result.as_numpy("logits"), alone, atol=1e-5)


def test_dynamic_batching_merges_concurrent_requests(tiny_build: Path, tmp_path: Path) -> None:
    """For a task that turns the dynamic batcher on (GPU instances want it), the runner
    answers a merged batch request by request."""
    repository = tmp_path / "repository"
    shutil.copytree(tiny_build / "model_repository" / "sentiment", repository / "sentiment")
    config_path = repository / "sentiment" / CONFIG_FILE
    config = parse_config(config_path.read_text(encoding="utf-8"))
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    config_path.write_text(render_config(config), encoding="utf-8")
    classifier = _classifier(tiny_build, "sentiment")
    texts = _texts(tiny_build, "sentiment", 4)
    server = TritonServer(TritonSettings.on_free_ports(repository))
    server.start()
    try:

        def statistics() -> tuple[int, int]:
            stats = _client(server).get_inference_statistics("sentiment", as_json=True)
            model = stats["model_stats"][0]
            return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

        def send(index: int) -> None:
            client = _client(server)
            text = texts[index % len(texts)]
            for _ in range(12):
                logits = client.infer("sentiment", _triton_inputs(classifier.encode([text])))
                np.testing.assert_allclose(
                    logits.as_numpy("logits"), classifier.logits([text]), atol=1e-5
                )

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, range(16)))
        # Triton updates its statistics just after it answers: give the last ones a moment.
        deadline = time.monotonic() + 5
        inferences, executions = statistics()
        while inferences < 16 * 12 and time.monotonic() < deadline:
            time.sleep(0.05)
            inferences, executions = statistics()
        assert inferences == 16 * 12
        assert executions < inferences
    finally:
        server.stop()


def test_prometheus_metrics_endpoint(triton: TritonServer) -> None:
    url = f"http://127.0.0.1:{triton.settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    for family in (
        "nv_inference_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ):
        assert f'{family}{{model="topic",version="1"}}' in metrics


def test_model_metadata_keeps_the_onnx_tensors(triton: TritonServer) -> None:
    url = f"http://127.0.0.1:{triton.settings.http_port}/v2/models/sentiment"
    with urllib.request.urlopen(url, timeout=5) as response:
        metadata = json.load(response)
    assert [i["name"] for i in metadata["inputs"]][:2] == ["input_ids", "attention_mask"]
    assert all(i["datatype"] == "INT64" and i["shape"] == [-1, -1] for i in metadata["inputs"])
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    triton: TritonServer, tiny_build: Path
) -> None:
    client = _client(triton)
    good = _classifier(tiny_build, "topic").encode(["markets rallied"])
    wrong_rank = {name: array[None] for name, array in good.items()}
    with pytest.raises(InferenceServerException, match=r"(?i)shape|dims"):
        client.infer("topic", _triton_inputs(wrong_rank))

    wrong_dtype = []
    for name, array in good.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array.astype(np.int32))
        wrong_dtype.append(tensor)
    with pytest.raises(InferenceServerException, match=r"(?i)data.?type|INT32"):
        client.infer("topic", wrong_dtype)

    with pytest.raises(InferenceServerException, match=r"(?i)unknown model|not found"):
        client.infer("weather", _triton_inputs(good))
    with pytest.raises(InferenceServerException, match=r"(?i)version"):
        client.infer("topic", _triton_inputs(good), model_version="7")

    mismatched = dict(good)
    mismatched["attention_mask"] = np.ones((1, good["input_ids"].shape[1] + 3), dtype=np.int64)
    with pytest.raises(InferenceServerException, match=r"must be \(rows, tokens\) of one shape"):
        client.infer("topic", _triton_inputs(mismatched))
    out_of_vocabulary = dict(good)
    out_of_vocabulary["input_ids"] = np.full_like(good["input_ids"], 10**9)
    with pytest.raises(InferenceServerException, match="onnxruntime could not run this request"):
        client.infer("topic", _triton_inputs(out_of_vocabulary))

    result = client.infer("topic", _triton_inputs(good))
    assert result.as_numpy("logits").shape == (1, 5)
