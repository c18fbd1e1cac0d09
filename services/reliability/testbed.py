"""A private Redis, Triton and router on free loopback ports that scenarios may break.

Every process is started here and stopped by `Testbed.stop` (or the context manager), also
when a scenario fails half way.
"""

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.cluster

from services.contracts.cache_schema import (
    GENERATIONS_CHANNEL,
    CachedPrediction,
    generation_key,
    prediction_key,
)
from services.contracts.model_repository import model_names
from services.processes.redis_server import RedisServer
from services.reliability.proxy import StallingProxy
from services.stack.router_process import RouterProcess
from services.triton.server import TritonServer, TritonSettings

__all__ = ["Testbed", "publish_generation"]


def publish_generation(
    client: "redis.Redis | redis.cluster.RedisCluster",
    namespace: str,
    labels: list[str],
    answers: dict[str, str],
) -> str:
    """Write a complete generation of teacher answers, flip the pointer, announce it: what the
    batch job does, without the teacher."""
    generation = uuid.uuid4().hex[:12]
    with client.pipeline(transaction=False) as pipe:
        for text, label in answers.items():
            scores = {name: (0.9 if name == label else 0.1 / (len(labels) - 1)) for name in labels}
            prediction = CachedPrediction(label, scores, "teacher-test", "7", time.time())
            pipe.set(prediction_key(namespace, generation, text), prediction.to_json(), ex=3600)
        pipe.execute()
    client.set(generation_key(namespace), generation)
    client.publish(GENERATIONS_CHANNEL, f"{namespace} {generation}")
    return generation


class Testbed:
    """Redis (saving to disk on shutdown, so a restart keeps the cache), Triton and a router."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, directory: Path, repository: Path, **router_overrides: Any) -> None:
        # A bounded Triton timeout and a shutdown delay, so both can be checked.
        router_overrides = {
            "triton_timeout_ms": 1000.0,
            "shutdown_delay_seconds": 1.0,
            # So a version that never becomes READY is reported within a scenario.
            "version_ready_timeout_seconds": 3.0,
        } | router_overrides
        self.router_overrides = router_overrides
        """The router's settings beyond a test deployment's, for a second router alike."""
        self.directory = directory
        # A copy of its own (hard links), so a scenario may publish versions into it.
        self.repository = directory / "model_repository"
        shutil.copytree(repository, self.repository, copy_function=os.link)
        repository = self.repository
        models = model_names(repository)
        if not models:
            raise ValueError(f"the model repository {repository} holds no model")
        self.task = models[0]
        """The task the scenarios exercise: the repository's first model."""
        self.redis = RedisServer(directory, persistent=True)
        self.triton_settings = TritonSettings.on_free_ports(repository)
        self.triton = TritonServer(self.triton_settings)
        # The launcher's watch: new and removed versions reach Triton (`TritonServer.serve`,
        # which would end when a scenario stops Triton on purpose).
        self._stop_watching = threading.Event()
        self._triton_lock = threading.Lock()  # no mirroring while Triton restarts
        self._watcher = threading.Thread(target=self._mirror_versions, daemon=True)
        # The router reaches Triton through a proxy that can stall, as a stuck Triton would.
        self.triton_proxy = StallingProxy(self.triton_settings.grpc_port)
        self.router = RouterProcess(
            directory, repository, self.redis.url, self.triton_proxy.port, **router_overrides
        )

    def start(self) -> None:
        try:
            self.redis.start()
            self.triton.start()
            self._watcher.start()
            self.triton_proxy.start()
            self.router.start()
        except BaseException:
            self.stop()
            raise

    def _mirror_versions(self) -> None:
        while not self._stop_watching.wait(self.triton_settings.poll_seconds):
            with self._triton_lock:
                self.triton.runtime.sync()

    def restart_triton(self) -> None:
        with self._triton_lock:
            self.triton.stop()
            self.triton = TritonServer(self.triton_settings)
            self.triton.start()

    def stall_triton(self, stalled: bool) -> None:
        """Stop (or resume) every byte between the router and Triton: a model that answers
        nothing, for as long as the stall lasts."""
        self.triton_proxy.stall(stalled)

    def stop(self) -> None:
        self.router.stop()
        self._stop_watching.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self.triton_proxy.stop()
        self.triton.stop()
        self.redis.stop()

    def __enter__(self) -> "Testbed":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
