"""Triton servers of their own: new versions, broken versions, response cache, start and stop."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.processes.ports import free_port
from services.triton.server import TritonError, TritonServer
from tests.integration.conftest import triton_settings


def _wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture()
def topic_repository(tiny_build: Path, tmp_path: Path) -> Path:
    """A private copy of the topic model, free to change."""
    repository = tmp_path / "model_repository"
    shutil.copytree(tiny_build / "model_repository" / "topic", repository / "topic")
    return repository


@pytest.fixture()
def private_triton(topic_repository: Path) -> Iterator[TritonServer]:
    server = TritonServer(triton_settings(topic_repository, cache_size=1 << 20, poll_seconds=0.5))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _infer(server: TritonServer, repository: Path, version: str = "") -> np.ndarray:
    model = repository / "topic" / "1"
    inputs = OnnxTextClassifier(model / "model.onnx", model / "tokenizer.json").encode(["a goal"])
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.settings.grpc_port}")
    logits: np.ndarray = client.infer("topic", tensors, model_version=version).as_numpy("logits")
    return logits


def _sync_and_ready(server: TritonServer, version: str) -> bool:
    server.runtime.sync()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.settings.grpc_port}")
    return bool(client.is_model_ready("topic", version))


def _serve_in_child(repository: Path) -> subprocess.Popen[str]:
    """`switchyard triton serve` as a user runs it, in a process group of its own."""
    ports = [str(free_port()) for _ in range(3)]
    return subprocess.Popen(
        [
            sys.executable, "-m", "services.cli", "triton", "serve",
            "--repository", str(repository),
            "--grpc-port", ports[0], "--http-port", ports[1], "--metrics-port", ports[2],
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip


def test_new_version_is_served_without_restart_and_broken_one_never_is(
    private_triton: TritonServer, topic_repository: Path
) -> None:
    pid = private_triton.pid
    expected = _infer(private_triton, topic_repository, "1")
    shutil.copytree(topic_repository / "topic" / "1", topic_repository / "topic" / "2")
    assert _wait_until(lambda: _sync_and_ready(private_triton, "2"))
    np.testing.assert_allclose(_infer(private_triton, topic_repository, "2"), expected, atol=1e-5)
    assert private_triton.pid == pid

    broken = topic_repository / "topic" / "3"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    report = private_triton.runtime.sync()
    assert "onnxruntime cannot load" in report.rejected["topic/3"]
    time.sleep(2)  # several of Triton's repository polls
    assert _sync_and_ready(private_triton, "2")
    np.testing.assert_allclose(_infer(private_triton, topic_repository), expected, atol=1e-5)


def test_a_served_version_is_not_loaded_again(
    private_triton: TritonServer, topic_repository: Path
) -> None:
    """Nothing the backend stub writes into a version's folder (its bytecode cache did) makes
    the repository poll load the model again: a reload costs new sessions and resets its
    statistics. Triton loads the model once at start, and once more, with both versions,
    when the second version arrives."""
    _infer(private_triton, topic_repository)
    time.sleep(2.5)  # five of Triton's repository polls
    shutil.copytree(topic_repository / "topic" / "1", topic_repository / "topic" / "2")
    assert _wait_until(lambda: _sync_and_ready(private_triton, "2"))
    time.sleep(2.5)
    loads = [line for line in private_triton.log_text().splitlines() if '"loading: topic:' in line]
    assert sorted(line.rsplit(":", 1)[1] for line in loads) == ['1"', '1"', '2"']


def test_response_cache_answers_repeated_requests(
    private_triton: TritonServer, topic_repository: Path
) -> None:
    first = _infer(private_triton, topic_repository)
    np.testing.assert_array_equal(_infer(private_triton, topic_repository), first)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{private_triton.settings.grpc_port}")
    stats = client.get_inference_statistics("topic", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["cache_hit"].get("count", 0)) >= 1


def test_a_model_that_fails_to_load_reports_the_servers_error(topic_repository: Path) -> None:
    config = topic_repository / "topic" / "config.pbtxt"
    config.write_text(config.read_text().replace("KIND_CPU", "KIND_GPU"))
    server = TritonServer(triton_settings(topic_repository, ready_timeout=30))
    started = time.monotonic()
    with pytest.raises(TritonError, match=r"(?i)gpu"):
        server.start()
    assert time.monotonic() - started < 30
    assert server.pid is None


def test_a_port_in_use_is_a_clear_error(topic_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = triton_settings(topic_repository, ready_timeout=30)
        settings.grpc_port = taken.getsockname()[1]
        with pytest.raises(TritonError, match=r"(?i)already in use|address in use|bind"):
            TritonServer(settings).start()


def test_sigterm_stops_everything_quickly(topic_repository: Path) -> None:
    cli = _serve_in_child(topic_repository)
    try:
        assert cli.stdout is not None
        line = cli.stdout.readline()
        assert "triton ready" in line, line
        launcher = psutil.Process(cli.pid)
        children = launcher.children(recursive=True)
        assert any(child.name() == "tritonserver" for child in children)
        assert any("stub" in child.name() for child in children)
        assert list(Path("/dev/shm").glob(f"switchyard{cli.pid}_*"))

        started = time.monotonic()
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(10) == 0
        assert time.monotonic() - started < 5
        assert not [
            child for child in children if child.is_running() and child.status() != "zombie"
        ]
        assert not list(Path("/dev/shm").glob(f"switchyard{cli.pid}_*"))
    finally:
        if cli.poll() is None:
            os.killpg(os.getpgid(cli.pid), signal.SIGKILL)


def test_triton_stops_when_its_launcher_is_killed(topic_repository: Path) -> None:
    cli = _serve_in_child(topic_repository)
    assert cli.stdout is not None
    assert "triton ready" in cli.stdout.readline()
    (server,) = [c for c in psutil.Process(cli.pid).children() if c.name() == "tritonserver"]
    cli.kill()
    cli.wait()
    server.wait(10)
    assert not server.is_running()


def test_leftovers_of_killed_launchers_are_removed(topic_repository: Path) -> None:
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    segment = Path("/dev/shm") / f"switchyard{dead_pid.pid}_ab12cd_region"
    segment.write_bytes(b"stale")
    mine = Path("/dev/shm") / f"switchyard{os.getpid()}_ef34ab_region"
    mine.write_bytes(b"in use")
    try:
        TritonServer(triton_settings(topic_repository)).stop()
        assert not segment.exists()
        assert mine.exists()
    finally:
        segment.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)
