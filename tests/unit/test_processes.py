"""Child processes with real, short-lived programs: start, readiness, stop, records, redis."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.processes import supervisor
from services.processes.ports import free_port
from services.processes.redis_server import RedisServer
from services.processes.supervisor import (
    ChildProcess,
    ProcessExited,
    ProcessRecord,
    ReadyTimeout,
    StartFailed,
)

# A hung child must fail its test, not the whole run.
pytestmark = pytest.mark.timeout(60)

PYTHON = sys.executable

# Ignores SIGTERM, then says so by creating the file argv[1].
IGNORE_TERM = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""

# Creates the file argv[1] after a while, then keeps running.
READY_AFTER_A_WHILE = """
import pathlib, sys, time
time.sleep(0.3)
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""

# Writes its PID to argv[1] once it handles SIGTERM, which it records in argv[2].
GRANDCHILD = """
import os, pathlib, signal, sys, time
pid_file, term_file = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def on_term(signum, frame):
    term_file.write_text("SIGTERM")
    raise SystemExit(0)
signal.signal(signal.SIGTERM, on_term)
pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
pid_file.with_suffix(".tmp").rename(pid_file)
time.sleep(60)
"""

# Starts GRANDCHILD (argv[3]) in its process group; on SIGTERM waits up to 1 s for it to
# end, as a server waits for its workers, and exits with 143.
SPAWN_GRANDCHILD = """
import contextlib, signal, subprocess, sys, time
grandchild = None
def on_term(signum, frame):
    with contextlib.suppress(subprocess.TimeoutExpired):
        grandchild.wait(1)
    raise SystemExit(143)
signal.signal(signal.SIGTERM, on_term)
grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1], sys.argv[2]])
time.sleep(60)
"""

# Starts `sleep 60` with ChildProcess, prints its record as JSON, then exits or lingers.
START_AND_PRINT = """
import json, sys, time
from dataclasses import asdict
from pathlib import Path
from services.processes.supervisor import ChildProcess
log, stop_with_parent, linger = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
child = ChildProcess.start(
    "sleeper", ["sleep", "60"], log, address="nowhere", stop_with_parent=stop_with_parent
)
print(json.dumps(asdict(child.record)), flush=True)
if linger:
    time.sleep(60)
"""


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def running(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` is a live (not zombie) process, and the same one when ticks are given."""
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def ticks(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[19])


def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Cleanup:
    """Every process a test starts, SIGKILLed (group and all) when the test ends."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []
        self.popens: list[subprocess.Popen[bytes]] = []
        self.processes: list[tuple[int, int]] = []  # (pid, start ticks), not our children

    def child(self, child: ChildProcess) -> ChildProcess:
        self.children.append(child)
        self.process(child.pid)
        return child

    def popen(self, process: "subprocess.Popen[bytes]") -> "subprocess.Popen[bytes]":
        self.popens.append(process)
        return process

    def process(self, pid: int, start_ticks: int | None = None) -> None:
        with contextlib.suppress(AssertionError):
            self.processes.append((pid, ticks(pid) if start_ticks is None else start_ticks))

    def run(self) -> None:
        for pid, start_ticks in self.processes:
            if running(pid, start_ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    group = os.getpgid(pid)
                    if group != os.getpgrp():
                        os.killpg(group, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for process in self.popens:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        for child in self.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    tracked = Cleanup()
    try:
        yield tracked
    finally:
        tracked.run()


def python(cleanup: Cleanup, name: str, code: str, log: Path, *args: str) -> ChildProcess:
    return cleanup.child(ChildProcess.start(name, [PYTHON, "-c", code, *args], log))


# --- start and the log ----------------------------------------------------------------------


def test_start_appends_the_output_to_the_log(tmp_path: Path, cleanup: Cleanup) -> None:
    log = tmp_path / "logs" / "nested" / "child.log"
    log.parent.mkdir(parents=True)
    log.write_text("earlier run\n")
    first = python(
        cleanup, "echo", "print('to stdout'); import sys; print('to stderr', file=sys.stderr)", log
    )
    assert first.wait(10) == 0
    second = python(cleanup, "echo", "print('second start')", log)
    assert second.wait(10) == 0
    assert log.read_text().splitlines() == ["earlier run", "to stdout", "to stderr", "second start"]


def test_start_creates_the_log_folder(tmp_path: Path, cleanup: Cleanup) -> None:
    log = tmp_path / "new" / "folder" / "child.log"
    assert python(cleanup, "echo", "print('hello')", log).wait(10) == 0
    assert log.read_text() == "hello\n"


def test_start_passes_the_environment(tmp_path: Path, cleanup: Cleanup) -> None:
    log = tmp_path / "child.log"
    env = {**os.environ, "SWITCHYARD_TEST_VALUE": "from the parent"}
    code = "import os; print(os.environ['SWITCHYARD_TEST_VALUE'])"
    child = cleanup.child(ChildProcess.start("env", [PYTHON, "-c", code], log, env=env))
    assert child.wait(10) == 0
    assert log.read_text() == "from the parent\n"


def test_record_describes_the_running_process(tmp_path: Path, cleanup: Cleanup) -> None:
    log = tmp_path / "sleep.log"
    child = cleanup.child(ChildProcess.start("sleeper", ["sleep", "60"], log, address="addr:1"))
    record = child.record
    assert (record.name, record.pid, record.address, record.log) == (
        "sleeper",
        child.pid,
        "addr:1",
        str(log),
    )
    assert record.start_ticks == ticks(child.pid)
    assert record.alive()
    assert child.returncode is None
    assert os.getpgid(child.pid) == child.pid  # its own process group
    assert os.getsid(child.pid) == child.pid


# --- wait_ready -----------------------------------------------------------------------------


def test_wait_ready_returns_once_the_condition_holds(tmp_path: Path, cleanup: Cleanup) -> None:
    ready = tmp_path / "ready"
    child = python(cleanup, "slow", READY_AFTER_A_WHILE, tmp_path / "slow.log", str(ready))
    started = time.monotonic()
    child.wait_ready(ready.exists, 20)
    assert ready.exists()
    assert time.monotonic() - started < 10
    assert child.returncode is None


def test_wait_ready_raises_process_exited_with_the_code_and_log(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    log = tmp_path / "failing.log"
    child = python(cleanup, "failing", "print('bad config'); raise SystemExit(3)", log)
    with pytest.raises(ProcessExited) as caught:
        child.wait_ready(lambda: False, 20)
    assert isinstance(caught.value, StartFailed)
    message = str(caught.value)
    assert "failing" in message
    assert "code 3" in message
    assert str(log) in message
    assert child.returncode == 3
    assert log.read_text() == "bad config\n"


def test_wait_ready_raises_ready_timeout_and_leaves_the_process_running(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    log = tmp_path / "sleep.log"
    child = cleanup.child(ChildProcess.start("sleeper", ["sleep", "60"], log))
    started = time.monotonic()
    with pytest.raises(ReadyTimeout, match=f"sleeper not ready after .*; see {log}"):
        child.wait_ready(lambda: False, 0.3)
    assert 0.3 <= time.monotonic() - started < 10
    assert child.returncode is None
    assert child.record.alive()


# --- stop -----------------------------------------------------------------------------------


def start_with_grandchild(tmp_path: Path, cleanup: Cleanup) -> tuple[ChildProcess, int, int]:
    pid_file = tmp_path / "grandchild.pid"
    args = [str(pid_file), str(tmp_path / "grandchild.term"), GRANDCHILD]
    child = python(cleanup, "parent", SPAWN_GRANDCHILD, tmp_path / "parent.log", *args)
    child.wait_ready(pid_file.exists, 20)
    grandchild = int(pid_file.read_text())
    grandchild_ticks = ticks(grandchild)
    cleanup.process(grandchild, grandchild_ticks)
    assert running(grandchild, grandchild_ticks)
    return child, grandchild, grandchild_ticks


def test_stop_terminates_the_whole_group_including_grandchildren(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    child, grandchild, grandchild_ticks = start_with_grandchild(tmp_path, cleanup)
    assert child.stop(5.0) == 143
    assert (tmp_path / "grandchild.term").read_text() == "SIGTERM"
    assert eventually(lambda: not running(grandchild, grandchild_ticks))


def test_signal_reaches_only_the_process_not_its_group(tmp_path: Path, cleanup: Cleanup) -> None:
    child, grandchild, grandchild_ticks = start_with_grandchild(tmp_path, cleanup)
    child.signal(signal.SIGTERM)
    assert child.wait(10) == 143
    assert running(grandchild, grandchild_ticks)
    assert not (tmp_path / "grandchild.term").exists()


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace_period(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    ready = tmp_path / "ready"
    child = python(cleanup, "stubborn", IGNORE_TERM, tmp_path / "stubborn.log", str(ready))
    child.wait_ready(ready.exists, 20)
    started = time.monotonic()
    assert child.stop(0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10
    assert child.returncode == -signal.SIGKILL


def test_stop_of_a_child_that_already_exited_returns_its_code(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    child = python(cleanup, "done", "raise SystemExit(4)", tmp_path / "done.log")
    assert eventually(lambda: child.returncode is not None)
    assert child.stop(5.0) == 4


def test_a_second_stop_sends_no_signal(
    tmp_path: Path, cleanup: Cleanup, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, int]] = []
    signal_group = supervisor._signal_group

    def recording(pid: int, signum: int) -> None:
        sent.append((pid, signum))
        signal_group(pid, signum)

    monkeypatch.setattr(supervisor, "_signal_group", recording)
    child = cleanup.child(ChildProcess.start("sleeper", ["sleep", "60"], tmp_path / "s.log"))
    assert child.stop(5.0) == -signal.SIGTERM
    assert sent[0] == (child.pid, signal.SIGTERM)
    signals = len(sent)
    assert child.stop(5.0) == -signal.SIGTERM
    assert len(sent) == signals


# --- ProcessRecord --------------------------------------------------------------------------


def test_record_is_not_alive_once_the_process_exited(tmp_path: Path, cleanup: Cleanup) -> None:
    child = python(cleanup, "quick", "pass", tmp_path / "quick.log")
    record = child.record
    # Not yet reaped, the exited child is a zombie: not alive.
    assert eventually(lambda: not record.alive())
    stat = proc_stat(record.pid)
    assert stat is not None
    assert stat[0] == "Z"
    assert child.wait(10) == 0
    assert proc_stat(record.pid) is None
    assert not record.alive()


def test_record_with_other_start_ticks_is_a_recycled_pid_and_never_signalled(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    child = cleanup.child(ChildProcess.start("sleeper", ["sleep", "60"], tmp_path / "s.log"))
    recycled = replace(child.record, start_ticks=child.record.start_ticks + 1)
    assert child.record.alive()
    assert not recycled.alive()
    recycled.stop(0.1)
    time.sleep(0.1)
    assert child.returncode is None
    assert child.record.alive()


def test_record_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path, cleanup: Cleanup) -> None:
    ready = tmp_path / "ready"
    child = python(cleanup, "stubborn", IGNORE_TERM, tmp_path / "stubborn.log", str(ready))
    child.wait_ready(ready.exists, 20)
    started = time.monotonic()
    child.record.stop(0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert not child.record.alive()
    assert child.wait(10) == -signal.SIGKILL


def start_from_another_process(
    cleanup: Cleanup, log: Path, *, stop_with_parent: bool, linger: bool
) -> tuple["subprocess.Popen[bytes]", ProcessRecord]:
    """A python process that starts `sleep 60` with ChildProcess and prints its record."""
    flags = ["1" if stop_with_parent else "0", "1" if linger else "0"]
    parent = cleanup.popen(
        subprocess.Popen(
            [PYTHON, "-c", START_AND_PRINT, str(log), *flags],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, f"the starting process printed nothing; see {log}"
    record = ProcessRecord(**json.loads(line))
    cleanup.process(record.pid, record.start_ticks)
    return parent, record


def test_record_stops_a_process_started_by_another_process(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    parent, record = start_from_another_process(
        cleanup, tmp_path / "sleep.log", stop_with_parent=False, linger=False
    )
    assert parent.wait(20) == 0
    assert (record.name, record.address) == ("sleeper", "nowhere")
    assert record.alive()
    assert running(record.pid, record.start_ticks)
    record.stop(5.0)
    assert not record.alive()
    assert not running(record.pid, record.start_ticks)


@pytest.mark.parametrize("stop_with_parent", [True, False])
def test_stop_with_parent_stops_the_child_when_its_parent_is_killed(
    tmp_path: Path, cleanup: Cleanup, stop_with_parent: bool
) -> None:
    parent, record = start_from_another_process(
        cleanup, tmp_path / "sleep.log", stop_with_parent=stop_with_parent, linger=True
    )
    # setpriv sets the parent-death signal before it execs the command.
    cmdline = Path(f"/proc/{record.pid}/cmdline")
    assert eventually(lambda: cmdline.read_bytes().split(b"\0")[0] == b"sleep")
    parent.kill()
    assert parent.wait(10) == -signal.SIGKILL
    if stop_with_parent:
        assert eventually(lambda: not running(record.pid, record.start_ticks))
    else:
        time.sleep(0.3)
        assert running(record.pid, record.start_ticks)


def test_stop_with_parent_without_setpriv_is_a_start_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    log = tmp_path / "never" / "started.log"
    with pytest.raises(StartFailed, match="setpriv"):
        ChildProcess.start("sleeper", ["sleep", "60"], log, stop_with_parent=True)
    assert not log.exists()


# --- ports ----------------------------------------------------------------------------------


def test_free_port_can_be_listened_on() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()


# --- redis_server ---------------------------------------------------------------------------


def impatient_client(server: RedisServer) -> "redis.Redis":
    """A client that gives up at once: redis-py's default retries take seconds."""
    return redis.Redis(
        host=server.host, port=server.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0)
    )


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_redis_server_answers_until_stopped(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.ping()
        with server.client() as client:
            client.set("key", "value")
            assert client.get("key") == b"value"
    assert not listening(server.port)
    assert (tmp_path / f"redis-{server.port}.log").is_file()


def test_paused_redis_server_does_not_answer_until_resumed(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        server.pause(True)
        with impatient_client(server) as client, pytest.raises(redis.TimeoutError):
            client.ping()
        server.pause(False)
        with impatient_client(server) as client:
            assert client.ping()
        server.pause(True)
        started = time.monotonic()
        server.stop()  # resumes it first, so SIGTERM is not left pending
        assert time.monotonic() - started < 5
    assert not listening(server.port)


@pytest.mark.parametrize("persistent", [True, False])
def test_only_a_persistent_redis_server_keeps_its_data_across_a_restart(
    tmp_path: Path, persistent: bool
) -> None:
    server = RedisServer(tmp_path, persistent=persistent)
    try:
        server.start()
        with server.client() as client:
            client.set("kept", "yes")
        server.stop()
        assert (tmp_path / f"redis-{server.port}.rdb").is_file() == persistent
        server.start()
        with server.client() as client:
            assert client.get("kept") == (b"yes" if persistent else None)
    finally:
        server.stop()
