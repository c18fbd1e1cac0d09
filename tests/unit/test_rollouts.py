"""`switchyard models canary|promote|rollback|rollout`: the records they write in a real
redis-server, the announcement every router follows, and their one-line errors."""

import threading
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.contracts.rollout_schema import ROLLOUTS_CHANNEL, Rollout, rollout_key
from services.pipeline.rollout import LATEST, RolloutError, Rollouts
from services.processes.redis_server import RedisServer
from tests.unit.router.fakes import write_model_repository


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write_model_repository(tmp_path / "repository", versions=("1", "2", "3"))


@pytest.fixture
def model() -> str:
    """A model name of its own per test: the session shares one redis-server."""
    return f"topic-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rollouts(redis_server: RedisServer, repository: Path, model: str) -> Rollouts:
    (repository / "topic").rename(repository / model)
    return Rollouts(redis_server.client(), repository)


def test_canary_promote_and_rollback_move_through_the_versions(
    rollouts: Rollouts, model: str
) -> None:
    assert rollouts.read(model) == Rollout()
    # Following the newest (3): a canary of 3 pins the version before it as the stable one.
    canary = rollouts.canary(model, "3", weight=0.2, shadow=0.1)
    assert (canary.stable, canary.candidate, canary.weight, canary.shadow) == ("2", "3", 0.2, 0.1)
    assert rollouts.read(model) == canary
    assert canary.updated_at > 0
    # Rolling back a canary ends it; the stable version stays.
    ended = rollouts.rollback(model)
    assert (ended.stable, ended.candidate, ended.weight) == ("2", "", 0.0)
    promoted = rollouts.promote(model, "3")
    assert (promoted.stable, promoted.candidate, promoted.previous) == ("3", "", "2")
    back = rollouts.rollback(model)
    assert (back.stable, back.previous) == ("2", "")
    # With nothing remembered, rollback takes the version before the served one.
    assert rollouts.rollback(model).stable == "1"
    with pytest.raises(RolloutError, match="nothing to roll back to"):
        rollouts.rollback(model)
    following = rollouts.promote(model, LATEST)
    assert (following.stable, following.previous) == ("", "1")


def test_every_change_is_announced(
    rollouts: Rollouts, redis_server: RedisServer, model: str
) -> None:
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(ROLLOUTS_CHANNEL)
    assert pubsub.get_message(timeout=2.0)["type"] == "subscribe"  # type: ignore[index]
    rollouts.promote(model, "2")
    message = pubsub.get_message(timeout=2.0)
    assert message is not None and message["data"] == model.encode()
    pubsub.close()


def test_concurrent_changes_are_never_lost(rollouts: Rollouts, model: str) -> None:
    rollouts.promote(model, "2")
    errors: list[BaseException] = []

    def change(weight: float) -> None:
        try:
            rollouts.canary(model, "3", weight=weight, shadow=weight)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=change, args=(w / 10,)) for w in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    record = rollouts.read(model)
    # One of the writers won whole: weight and shadow come from the same change.
    assert record.weight == record.shadow and record.stable == "2"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r, m: r.promote(m, "9"), "no version 9 of"),
        (lambda r, m: r.promote("weather", "1"), "no model 'weather'"),
        (lambda r, m: r.promote(m, "v2"), "a version is a number"),
        (lambda r, m: r.canary(m, "3", weight=0.0, shadow=0.0), "needs --weight or --shadow"),
        (lambda r, m: r.canary(m, "3", weight=2.0, shadow=0.0), "within \\[0, 1\\]"),
        (lambda r, m: r.canary(m, "2", weight=0.1, shadow=0.0), "already the stable one"),
    ],
)
def test_a_change_that_cannot_be_made_is_refused_and_nothing_is_written(
    rollouts: Rollouts, model: str, call: object, message: str
) -> None:
    rollouts.promote(model, "2")
    before = rollouts.read(model)
    with pytest.raises(RolloutError, match=message):
        call(rollouts, model)  # type: ignore[operator]
    assert rollouts.read(model) == before


def test_a_malformed_record_is_reported_and_promote_replaces_it(
    rollouts: Rollouts, redis_server: RedisServer, model: str
) -> None:
    redis_server.client().set(rollout_key(model), b"{half a record")
    with pytest.raises(RolloutError, match="malformed"):
        rollouts.read(model)
    assert rollouts.promote(model, LATEST) == rollouts.read(model)


def test_the_commands_print_one_line_and_exit_2_on_bad_input(
    redis_server: RedisServer, repository: Path, model: str
) -> None:
    (repository / "topic").rename(repository / model)
    common = ["--model-repository", str(repository), "--redis-url", redis_server.url]
    runner = CliRunner()
    done = runner.invoke(app, ["models", "promote", model, "2", *common])
    assert done.exit_code == 0, done.output
    assert f"{model}: stable version 2 (pinned)" in done.output
    shown = runner.invoke(app, ["models", "rollout", model, *common])
    assert shown.exit_code == 0 and "stable version 2 (pinned)" in shown.output
    for args, message in (
        (["models", "promote", model, "9", *common], "no version 9"),
        (["models", "canary", model, "3", "--weight", "0", *common], "needs --weight"),
        (
            [
                "models",
                "rollback",
                model,
                "--model-repository",
                str(repository),
                "--redis-url",
                "redis://127.0.0.1:1/0",
            ],
            "Redis failed",
        ),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
