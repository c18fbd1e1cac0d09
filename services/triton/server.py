"""Launch, watch and stop the `tritonserver` binary bundled in the `nvidia-pytriton` wheel.

The server can hang instead of exiting when its python-backend stub fails to start, so
readiness is awaited with a deadline and the server's own error lines are reported. The
server runs in its own process group (`services.processes.supervisor`), so stopping it also
stops every backend stub, and it gets SIGTERM if the launcher dies first.
"""

import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import sysconfig
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.processes.ports import free_port
from services.processes.supervisor import ChildProcess, ProcessExited, StartFailed
from services.triton.runtime_repository import RuntimeRepository, SyncReport

__all__ = ["TritonError", "TritonServer", "TritonSettings"]

_SHM_DIR = Path("/dev/shm")


class TritonSettings(BaseSettings):
    """Triton launcher settings; environment variables SWITCHYARD_TRITON_* override defaults."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_TRITON_")

    repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = Field(8001, ge=1, le=65535)
    http_port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    cache_size: int = Field(0, ge=0, description="response cache bytes; 0 disables it")
    onnx_threads: int | None = Field(None, ge=1, description="onnxruntime threads per instance")
    poll_seconds: float = Field(1.0, gt=0)
    previous_version_seconds: float | None = Field(
        None,
        ge=0,
        description="how long a replaced version keeps serving beside its successor; None: "
        "until the next version replaces it (it is the rollback target and a canary's stable)",
    )
    ready_timeout: float = Field(60.0, gt=0)
    stop_timeout: float = Field(4.0, gt=0)

    @classmethod
    def on_free_ports(cls, repository: Path, **overrides: Any) -> "TritonSettings":
        """Settings for a Triton on free loopback ports (tests, benchmarks, scenarios)."""
        return cls(
            repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            **overrides,
        )


class TritonError(RuntimeError):
    """Triton could not start or stopped unexpectedly; the message carries its own error text."""


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonError(
            "nvidia-pytriton is not installed: pip install 'switchyard-serving[triton]'"
        )
    return Path(spec.origin).parent / "tritonserver"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers() -> None:
    """Delete shared memory and work folders of launchers that were killed (SIGKILL, OOM)."""
    leftovers = [
        *_SHM_DIR.glob("switchyard*_*"),
        *Path(tempfile.gettempdir()).glob("switchyard-triton-*-*"),
    ]
    for path in leftovers:
        found = re.match(r"switchyard(?:-triton-)?(\d+)[_-]", path.name)
        if found is None or _pid_alive(int(found.group(1))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _error_lines(log: str) -> str:
    """The lines of a Triton log that say what went wrong (errors and failed model states)."""
    lines = [
        line.strip()
        for line in log.splitlines()
        if re.match(r"^E\d{4} ", line) or "UNAVAILABLE" in line or "error:" in line.lower()
    ]
    return "\n".join(lines[-12:]) or "\n".join(log.strip().splitlines()[-12:])


class TritonServer:
    """One `tritonserver` process serving a runtime copy of a model repository."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        _remove_leftovers()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"switchyard-triton-{os.getpid()}-"))
        self.runtime = RuntimeRepository(
            settings.repository,
            self._workdir / "model_repository",
            response_cache=settings.cache_size > 0,
            onnx_threads=settings.onnx_threads,
            previous_version_seconds=settings.previous_version_seconds,
        )
        # Unique per server: several may run in one process (tests), each cleans only its own.
        self._shm_prefix = f"switchyard{os.getpid()}_{secrets.token_hex(3)}_"
        self._log_path = self._workdir / "tritonserver.log"
        self._process: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log_text(self) -> str:
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> SyncReport:
        """Start the server and wait, at most `ready_timeout`, until every model is ready."""
        if not self.settings.repository.is_dir():
            raise TritonError(f"model repository {self.settings.repository} is not a folder")
        report = self.runtime.sync()
        if not any(self.runtime.runtime.iterdir()):
            problems = "; ".join(f"{k}: {v}" for k, v in report.rejected.items()) or "no models"
            raise TritonError(f"nothing to serve in {self.settings.repository}: {problems}")
        root = _pytriton_root()
        backends = self._workdir / "backends" / "python"
        backends.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy(root / "backends" / "python" / name, backends / name)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(
            root / "python_backend_stubs" / version / "triton_python_backend_stub", backends
        )
        env = dict(os.environ)
        libs = [
            str(root.parent.parent / "nvidia_pytriton.libs"),
            sysconfig.get_config_var("LIBDIR"),
        ]
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
        # The backend stub runs the interpreter found first on PATH: this environment's.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        settings = self.settings
        command = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.runtime.runtime}",
            f"--backend-directory={self._workdir / 'backends'}",
            f"--cache-directory={root / 'caches'}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            f"--grpc-address={settings.host}",
            f"--http-address={settings.host}",
            f"--metrics-address={settings.host}",
            f"--grpc-port={settings.grpc_port}",
            f"--http-port={settings.http_port}",
            f"--metrics-port={settings.metrics_port}",
            "--model-control-mode=poll",
            f"--repository-poll-secs={max(1, round(settings.poll_seconds))}",
            "--exit-timeout-secs=3",
        ]
        if settings.cache_size > 0:
            command.append(f"--cache-config=local,size={settings.cache_size}")
        try:
            self._process = ChildProcess.start(
                "tritonserver", command, self._log_path, env=env, stop_with_parent=True
            )
        except StartFailed as exc:
            raise TritonError(str(exc)) from None
        self._wait_ready()
        return report

    def _ready(self) -> bool:
        url = f"http://{self.settings.host}:{self.settings.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def inference_count(self, model: str) -> int:
        """Inferences this server ran for `model`, every version (Triton's own statistics)."""
        url = f"http://{self.settings.host}:{self.settings.http_port}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            stats = json.load(response)
        return sum(int(entry.get("inference_count", 0)) for entry in stats.get("model_stats", []))

    def _wait_ready(self) -> None:
        assert self._process is not None
        try:
            self._process.wait_ready(self._ready, self.settings.ready_timeout)
        except ProcessExited:
            log = self.log_text()
            self.stop()
            raise TritonError(f"tritonserver exited while starting:\n{_error_lines(log)}") from None
        except StartFailed:
            log = self.log_text()
            self.stop()
            raise TritonError(
                f"tritonserver was not ready within {self.settings.ready_timeout:.0f} s:\n"
                f"{_error_lines(log)}"
            ) from None

    def check_alive(self) -> None:
        code = None if self._process is None else self._process.returncode
        if code is not None:
            raise TritonError(
                f"tritonserver exited with code {code}:\n{_error_lines(self.log_text())}"
            )

    def serve(self, stopping: threading.Event, say: Callable[[str], None]) -> None:
        """Until `stopping` is set: check the server every poll period and mirror new or
        removed model versions, saying what changed. TritonError if the server dies."""
        while not stopping.wait(self.settings.poll_seconds):
            self.check_alive()
            report = self.runtime.sync()
            for added in report.added:
                say(f"new model version {added}")
            for model, reason in report.rejected.items():
                say(f"not serving {model}: {reason}")

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after `stop_timeout`."""
        process, self._process = self._process, None
        if process is not None:
            process.stop(self.settings.stop_timeout)
        for segment in _SHM_DIR.glob(f"{self._shm_prefix}*"):
            segment.unlink(missing_ok=True)
        shutil.rmtree(self._workdir, ignore_errors=True)
