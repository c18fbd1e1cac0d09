"""The router's task set: every model of the model repository, with the serving settings its
model card records, under the router's own settings (file and environment), which win.

A task named only in the router's settings needs `model:`; it is served by that model. The
set is read at start-up and again whenever the repository changes or the router gets SIGHUP
(`router.server`), so a task added to a build is served without a restart.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from router.settings import RouterSettings, TaskSettings
from services.contracts.model_repository import CARD_FILE, latest_version, model_names

__all__ = ["TaskSet", "read_tasks", "repository_state"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSet:
    tasks: dict[str, TaskSettings]
    problems: list[str]
    """Models or settings that could not become a task, one line each."""


def repository_state(repository: Path) -> tuple[tuple[str, str, int], ...]:
    """What the task set depends on: each model's newest version and its card's change time."""
    state = []
    try:
        names = model_names(repository)
    except OSError:
        return ()
    for name in names:
        try:
            files = latest_version(repository, name)
            changed = (files.path / CARD_FILE).stat().st_mtime_ns
        except OSError:
            state.append((name, "", 0))
            continue
        state.append((name, files.version, changed))
    return tuple(state)


def _from_repository(repository: Path, problems: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    try:
        names = model_names(repository)
    except OSError as exc:
        problems.append(f"cannot read the model repository {repository}: {exc.strerror}")
        return found
    for name in names:
        try:
            card = latest_version(repository, name).card()
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"model {name!r} is not served: {exc}")
            continue
        values: dict[str, Any] = {"model": name}
        if card.serving is not None:
            values["confidence_threshold"] = card.serving.confidence_threshold
            values["max_text_length"] = card.serving.max_text_length
        found[name] = values
    return found


def read_tasks(settings: RouterSettings) -> TaskSet:
    """The tasks to serve now, and what kept any model or setting from becoming one."""
    problems: list[str] = []
    found = _from_repository(settings.model_repository, problems)
    tasks: dict[str, TaskSettings] = {}
    for name in sorted(set(found) | set(settings.tasks)):
        override = settings.tasks.get(name)
        values = found.get(name, {}) | (
            {} if override is None else override.model_dump(exclude_none=True)
        )
        if "model" not in values:
            problems.append(
                f"task {name!r} of the settings has no model: the repository holds no model of "
                "that name, so set its `model`"
            )
            continue
        values.setdefault("cache_namespace", name)
        try:
            tasks[name] = TaskSettings(**values)
        except ValidationError as exc:
            problems.append(f"task {name!r}: {exc.errors()[0]['msg']}")
    for problem in problems:
        _log.warning("%s", problem)
    return TaskSet(tasks, problems)
