"""Launch, watch and stop the `tritonserver` binary bundled in the `nvidia-pytriton` wheel.

The server can hang instead of exiting when its python-backend stub fails to start, so
readiness is awaited with a deadline and the server's own error lines are reported. The
server runs in its own process group, so stopping it also stops every backend stub.
"""

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    ready_timeout: float = Field(60.0, gt=0)
    stop_timeout: float = Field(4.0, gt=0)


class TritonError(RuntimeError):
    """Triton could not start or stopped unexpectedly; the message carries its own error text."""


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonError("nvidia-pytriton is not installed: pip install 'switchyard[serve]'")
    return Path(spec.origin).parent / "tritonserver"


def _stop_with_parent(command: list[str]) -> list[str]:
    """`command` run so that it gets SIGTERM when the launcher dies (even by SIGKILL).

    util-linux's setpriv sets the parent-death signal and execs the command. A Python
    preexec_fn would do the same, but it runs Python in the forked child, which can crash or
    deadlock when other threads of the launcher (gRPC clients, load generators) hold locks.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise TritonError("setpriv (util-linux) is missing: apt-get install util-linux")
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


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
        )
        # Unique per server: several may run in one process (tests), each cleans only its own.
        self._shm_prefix = f"switchyard{os.getpid()}_{secrets.token_hex(3)}_"
        self._log_path = self._workdir / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None

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
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                _stop_with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._wait_ready()
        return report

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        url = f"http://{self.settings.host}:{self.settings.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log = self.log_text()
                self.stop()
                raise TritonError(f"tritonserver exited while starting:\n{_error_lines(log)}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        log = self.log_text()
        self.stop()
        raise TritonError(
            f"tritonserver was not ready within {self.settings.ready_timeout:.0f} s:\n"
            f"{_error_lines(log)}"
        )

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise TritonError(
                f"tritonserver exited with code {self._process.returncode}:\n"
                f"{_error_lines(self.log_text())}"
            )

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after `stop_timeout`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            group = os.getpgid(process.pid)
            os.killpg(group, signal.SIGTERM)
            try:
                process.wait(self.settings.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                # Stubs that outlived the server belong to its group too.
                os.killpg(group, signal.SIGKILL)
        for segment in _SHM_DIR.glob(f"{self._shm_prefix}*"):
            segment.unlink(missing_ok=True)
        shutil.rmtree(self._workdir, ignore_errors=True)
