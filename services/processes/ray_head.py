"""A real local Ray cluster as one child process: `ray start --head --block` on loopback.

For tests and benchmarks of the batch job's Ray engine: a driver (`switchyard batch run
--engine ray`) joins it with `env` (the address and the cluster's token: Ray 2.60 requires
token authentication), which is much faster than starting a Ray of its own for each run.
Stopping the head stops every process it started: its process group gets SIGTERM, then
SIGKILL, and the workers Ray puts in groups of their own exit with their raylet; `stop` waits
until the whole session is gone.
"""

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from services.processes.ports import free_port
from services.processes.supervisor import ChildProcess, StartFailed

__all__ = ["RayHead"]

_STARTED = "Ray runtime started"
# Ray drains for up to 30 s on SIGTERM; nothing a test started needs draining.
_STOP_GRACE_S = 2.0
_SESSION_GONE_S = 15.0


def _session_members(session: int) -> list[int]:
    """PIDs whose session id (field 6 of /proc/PID/stat) is `session`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == session:
            members.append(int(entry.name))
    return members


class RayHead:
    def __init__(self, directory: Path, num_cpus: int = 2) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._token = secrets.token_hex(32)
        self._num_cpus = num_cpus
        self._directory = directory
        # Ray's socket paths live under its temp folder and must stay short (108 bytes).
        self._temp = Path(tempfile.mkdtemp(prefix="ray-"))
        self._process: ChildProcess | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a driver's environment needs to join this cluster."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self._token,
        }

    def start(self, timeout_s: float = 90.0) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        ports = {
            # Every port of its own, so two clusters (or a developer's Ray) never collide.
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--metrics-export-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--ray-client-server-port": free_port(),
        }
        command = [
            ray, "start", "--head", "--block", "--port", str(self.port),
            "--node-ip-address", "127.0.0.1", "--num-cpus", str(self._num_cpus),
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(self._temp),
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        log = self._directory / f"ray-head-{self.port}.log"
        env = {**os.environ, **self.env}
        env.pop("RAY_ADDRESS")  # the head starts the cluster; it does not join one
        self._process = ChildProcess.start("ray", command, log, env=env, stop_with_parent=True)
        try:
            self._process.wait_ready(lambda: _STARTED in log.read_text(errors="replace"), timeout_s)
        except StartFailed as exc:
            self.stop()
            raise RuntimeError(f"the Ray head did not start: {exc}") from None

    def stop(self) -> None:
        if self._process is not None:
            session = self._process.pid
            self._process.stop(_STOP_GRACE_S)
            self._process = None
            deadline = time.monotonic() + _SESSION_GONE_S
            while _session_members(session) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> "RayHead":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
