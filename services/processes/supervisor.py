"""One way to run a server as a child process: started in its own process group with its
output in a log file, awaited until ready with a deadline, stopped with SIGTERM and then
SIGKILL to the whole group, and recorded by PID and start time.

The Triton launcher, the local stack and the reliability testbed all start their servers
here. A group is signalled as a whole, so stopping a server also stops what it started
(Triton's backend stubs, the launcher's tritonserver). A `ProcessRecord` can be saved and
used from another process (`switchyard down`); it only signals while the PID's start time
still matches, so a recycled PID is never killed by mistake.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChildProcess", "ProcessExited", "ProcessRecord", "ReadyTimeout", "StartFailed"]

# SIGKILL cannot be refused, only delayed (a process in uninterruptible I/O): bounded.
_KILL_WAIT_S = 5.0


class StartFailed(RuntimeError):
    """A child did not become ready; the message says which and where its log is."""


class ProcessExited(StartFailed):
    pass


class ReadyTimeout(StartFailed):
    pass


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it follow its ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _until(done: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)
    return True


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    address: str
    log: str

    def alive(self) -> bool:
        if _start_ticks(self.pid) != self.start_ticks:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def stop(self, grace_s: float) -> None:
        """SIGTERM the group, SIGKILL it after `grace_s`; returns once the leader is gone."""
        if not self.alive():
            return
        _signal_group(self.pid, signal.SIGTERM)
        _until(lambda: not self.alive(), grace_s, 0.05)
        # The rest of the group too: a child may outlive a leader that exited on SIGTERM.
        _signal_group(self.pid, signal.SIGKILL)
        _until(lambda: not self.alive(), _KILL_WAIT_S)


def _with_parent_death_signal(command: Sequence[str]) -> list[str]:
    """`command` run so that it gets SIGTERM when its parent dies (even by SIGKILL).

    util-linux's setpriv sets the parent-death signal and execs the command. A Python
    preexec_fn would do the same, but it runs Python in the forked child, which can crash or
    deadlock when other threads of the parent (gRPC clients, load generators) hold locks.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StartFailed("setpriv (util-linux) is missing: apt-get install util-linux")
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


class ChildProcess:
    """A server this process started, with its record and its exit code."""

    def __init__(self, process: "subprocess.Popen[bytes]", record: ProcessRecord) -> None:
        self._process = process
        self.record = record
        self._stopped = False

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        address: str = "",
        env: dict[str, str] | None = None,
        stop_with_parent: bool = False,
    ) -> "ChildProcess":
        """Start `command` in a new session (its own process group), output appended to
        `log`. With `stop_with_parent` it gets SIGTERM if this process dies first."""
        argv = _with_parent_death_signal(command) if stop_with_parent else list(command)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:  # no such program, not executable
                raise StartFailed(f"{name} could not start: {exc}") from None
        ticks = _start_ticks(process.pid)
        if ticks is None:
            process.wait()
            raise ProcessExited(f"{name} exited at once; see {log}")
        return cls(process, ProcessRecord(name, process.pid, ticks, address, str(log)))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended; None while it runs."""
        return self._process.poll()

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll `ready` until it says yes; ProcessExited or ReadyTimeout (the process is left
        running: the caller decides) when the process ends or `timeout_s` passes first."""
        name, log = self.record.name, self.record.log
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self._process.poll() is not None:
                raise ProcessExited(
                    f"{name} exited with code {self._process.returncode} while starting; see {log}"
                )
            if time.monotonic() > deadline:
                raise ReadyTimeout(f"{name} not ready after {timeout_s:g} s; see {log}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send `signum` to the process (not its group)."""
        if self._process.poll() is None:
            self._process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit; subprocess.TimeoutExpired after `timeout_s`."""
        return self._process.wait(timeout_s)

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace_s`; returns the exit code (None if the
        process outlived even SIGKILL's wait). Only the first call signals: later ones must
        not reach a group ID the system has reused."""
        if self._stopped:
            return self._process.poll()
        self._stopped = True
        if self._process.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(grace_s)
        # The rest of the group too: a child may outlive a leader that exited on SIGTERM.
        _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(_KILL_WAIT_S)
        return self._process.returncode
