"""The stack's servers as detached processes, recorded in a state file so `down` finds them.

Each server runs in its own session (its own process group), so stopping it also stops what
it started (Triton's launcher and tritonserver). A recorded process is only signalled while
its start time still matches, so a recycled PID is never killed by mistake.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from services.stack.errors import StackError

__all__ = ["ManagedProcess", "StateFile", "spawn", "stop"]


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it follow its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int
    start_ticks: int
    address: str
    log: str

    def alive(self) -> bool:
        if _start_ticks(self.pid) != self.start_ticks:
            return False
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"


class StateFile:
    """`STATE_DIR/stack.json`: the running servers, in start order."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.json"

    def load(self) -> list[ManagedProcess]:
        if not self.path.exists():
            return []
        try:
            return [ManagedProcess(**item) for item in json.loads(self.path.read_text())]
        except (ValueError, TypeError) as exc:
            raise StackError(f"state file {self.path} is unreadable ({exc}); remove it") from None

    def save(self, processes: list[ManagedProcess]) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps([asdict(p) for p in processes], indent=2) + "\n")
        partial.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(name: str, command: list[str], address: str, log: Path) -> ManagedProcess:
    """Start `command` detached from this process, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ticks = _start_ticks(process.pid)
    if ticks is None:
        raise RuntimeError(f"{name} exited at once; see {log}")
    return ManagedProcess(name, process.pid, ticks, address, str(log))


def stop(process: ManagedProcess, grace_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s`; wait until the leader is gone."""
    if not process.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        # The rest of the group too: a child may outlive a leader that exited on SIGTERM.
        os.killpg(process.pid, signal.SIGKILL)
    # SIGKILL cannot be refused, only delayed (a process in uninterruptible I/O): bounded.
    deadline = time.monotonic() + 5
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
