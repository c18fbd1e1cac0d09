"""The stack's state file: the servers `switchyard up` started, so `down`, `demo` and `bench`
find them from another process. Processes are started and stopped by the supervisor
(`services.processes.supervisor`), which records each by PID and start time."""

import json
from dataclasses import asdict
from pathlib import Path

from services.processes.supervisor import ProcessRecord
from services.stack.errors import StackError

__all__ = ["StateFile"]


class StateFile:
    """`STATE_DIR/stack.json`: the running servers, in start order."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.json"

    def load(self) -> list[ProcessRecord]:
        if not self.path.exists():
            return []
        try:
            return [ProcessRecord(**item) for item in json.loads(self.path.read_text())]
        except (ValueError, TypeError) as exc:
            raise StackError(f"state file {self.path} is unreadable ({exc}); remove it") from None

    def save(self, processes: list[ProcessRecord]) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps([asdict(p) for p in processes], indent=2) + "\n")
        partial.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
