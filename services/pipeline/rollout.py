"""Rollouts: which version of each model every router of a deployment serves.

`switchyard models canary|promote|rollback` change a model's rollout record in Redis
(`services.contracts.rollout_schema`) and then announce it on pub/sub (a Redis Cluster
allows no PUBLISH inside a transaction; a router that misses it reads the record within its
1 s poll);
each router follows within about a second, and only onto versions Triton reports READY and
whose files load, so a change never fails a request. The read-modify-write runs under WATCH:
two operators at once never lose one of the changes.

Triton keeps the newest two versions of each model loaded (`SERVED_VERSIONS`), which is what
a canary needs and what makes a rollback instant.
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisClusterException, RedisError

from services.contracts.model_repository import model_names, version_dirs
from services.contracts.redis_connection import RedisSettings, sync_client
from services.contracts.rollout_schema import ROLLOUTS_CHANNEL, Rollout, rollout_key

__all__ = ["LATEST", "RolloutError", "RolloutSettings", "Rollouts"]

LATEST = "latest"
"""The version to promote for following the newest version Triton serves again."""


class RolloutError(Exception):
    """A rollout change that cannot be made; the message is one line for the operator."""


class RolloutSettings(RedisSettings, BaseSettings):
    """The environment sets them: SWITCHYARD_ROLLOUT_REDIS_URL, ..._REDIS_PASSWORD, ..."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_ROLLOUT_", frozen=True)

    redis_timeout_seconds: float = Field(5.0, gt=0)
    redis_cluster: bool = Field(False, description="redis_url is a node of a Redis Cluster")


class Rollouts:
    """The rollout records of a deployment; `repository`, when given, is checked so that no
    record names a model or version it does not hold."""

    def __init__(self, client: "redis.Redis", repository: Path | None) -> None:
        self._client = client
        self._repository = repository

    @classmethod
    def connect(cls, settings: RolloutSettings, repository: Path | None) -> "Rollouts":
        try:
            client = sync_client(
                settings,
                cluster=settings.redis_cluster,
                socket_timeout=settings.redis_timeout_seconds,
                socket_connect_timeout=settings.redis_timeout_seconds,
            )
        except (RedisError, RedisClusterException, OSError) as exc:
            # A cluster client asks a node for the slots at once.
            raise RolloutError(f"cannot reach the Redis Cluster: {exc}") from None
        except ValueError as exc:
            raise RolloutError(f"invalid Redis URL: {exc}") from None
        return cls(client, repository)

    def close(self) -> None:
        self._client.close()

    def read(self, model: str) -> Rollout:
        value = self._call(lambda: self._client.get(rollout_key(model)))
        if value is None:
            return Rollout()
        try:
            return Rollout.from_json(value)
        except ValueError as exc:
            raise RolloutError(
                f"the rollout record of {model!r} is malformed ({exc}); "
                f"`switchyard models promote {model} latest` replaces it"
            ) from None

    def canary(self, model: str, version: str, weight: float, shadow: float) -> Rollout:
        """Put `version` beside the stable version: it answers a `weight` share of the texts
        and is asked a `shadow` share of the others, off the request path."""
        self._check_version(model, version)
        if not (0.0 <= weight <= 1.0 and 0.0 <= shadow <= 1.0):
            raise RolloutError("--weight and --shadow must be within [0, 1]")
        if weight == 0.0 and shadow == 0.0:
            raise RolloutError("a canary needs --weight or --shadow above 0")

        def change(old: Rollout) -> Rollout:
            # The stable version is pinned for the canary: while following the newest version,
            # a candidate that is the newest would otherwise be the stable one too.
            newest = self._newest(model)
            stable = old.stable or (self._before(model, version) if version == newest else newest)
            if not stable:
                raise RolloutError(
                    f"which version of {model!r} is the stable one is not known here; pin it "
                    f"first with `switchyard models promote {model} VERSION`"
                )
            if version == stable:
                raise RolloutError(f"version {version} of {model!r} is already the stable one")
            return replace(old, stable=stable, candidate=version, weight=weight, shadow=shadow)

        return self._change(model, change)

    def promote(self, model: str, version: str) -> Rollout:
        """Serve `version` (or, for LATEST, the newest version Triton serves) as the stable
        version; any canary ends."""
        if version != LATEST:
            self._check_version(model, version)
        else:
            self._check_model(model)

        def change(old: Rollout) -> Rollout:
            served = self._served(model, old)
            target = "" if version == LATEST else version
            previous = served if served and served != (target or self._newest(model)) else ""
            return Rollout(stable=target, previous=previous or old.previous)

        return self._change(model, change)

    def rollback(self, model: str) -> Rollout:
        """End a running canary; without one, serve the stable version from before the last
        promote (or the version before the served one)."""
        self._check_model(model)

        def change(old: Rollout) -> Rollout:
            if old.candidate:
                return Rollout(stable=old.stable, previous=old.previous)
            served = self._served(model, old)
            target = old.previous or self._before(model, served)
            if not target:
                raise RolloutError(
                    f"nothing to roll back to: {model!r} serves "
                    f"{f'version {served}' if served else 'its newest version'} and no "
                    "earlier version is known"
                )
            return Rollout(stable=target)

        return self._change(model, change)

    def _change(self, model: str, change: Callable[[Rollout], Rollout]) -> Rollout:
        key = rollout_key(model)
        changed: list[Rollout] = []

        def transaction(pipe: "redis.client.Pipeline") -> None:
            value = pipe.get(key)
            try:
                old = Rollout() if value is None else Rollout.from_json(value)
            except ValueError:
                old = Rollout()  # a malformed record is replaced, never merged
            new = replace(change(old), updated_at=time.time())
            pipe.multi()
            pipe.set(key, new.to_json())
            changed[:] = [new]

        self._call(lambda: self._client.transaction(transaction, key))
        # The change is made: routers that miss the announcement read it at their next poll.
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            self._client.publish(ROLLOUTS_CHANNEL, model)
        return changed[0]

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (RedisError, RedisClusterException) as exc:
            raise RolloutError(f"Redis failed: {type(exc).__name__}: {exc}") from None

    def _versions(self, model: str) -> list[str] | None:
        """The model's versions in the repository, oldest first; None without a repository."""
        if self._repository is None or not self._repository.is_dir():
            return None
        return [folder.name for folder in version_dirs(self._repository / model)]

    def _check_model(self, model: str) -> None:
        if self._repository is None or not self._repository.is_dir():
            return
        models = model_names(self._repository)
        if model not in models:
            raise RolloutError(
                f"no model {model!r} in {self._repository}; it holds: {', '.join(models) or 'none'}"
            )

    def _check_version(self, model: str, version: str) -> None:
        if not version.isdigit():
            raise RolloutError(f"a version is a number, got {version!r}")
        self._check_model(model)
        versions = self._versions(model)
        if versions is not None and version not in versions:
            raise RolloutError(
                f"no version {version} of {model!r} in {self._repository}; "
                f"it holds versions {', '.join(versions)}"
            )

    def _newest(self, model: str) -> str:
        versions = self._versions(model)
        return versions[-1] if versions else ""

    def _served(self, model: str, rollout: Rollout) -> str:
        """The stable version the routers serve under `rollout`, as far as is known here."""
        return rollout.stable or self._newest(model)

    def _before(self, model: str, version: str) -> str:
        versions = self._versions(model) or []
        older = [v for v in versions if version and int(v) < int(version)]
        return older[-1] if older else ""
