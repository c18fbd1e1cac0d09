from pathlib import Path

import pytest
from pydantic import ValidationError

from router.settings import load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def test_yaml_with_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(
        tmp_path,
        "model_repository: models\n"
        "redis_url: redis://127.0.0.1:6379/0\n"
        "tasks:\n  topic: {model: topic, confidence_threshold: 0.5}\n",
    )
    monkeypatch.setenv("SWITCHYARD_ROUTER_REDIS_URL", "redis://user:secret@10.0.0.1:6380/1")
    monkeypatch.setenv("SWITCHYARD_ROUTER_GRPC_PORT", "6000")
    settings = load_settings(config)
    assert settings.redis_url == "redis://user:secret@10.0.0.1:6380/1"
    assert settings.grpc_port == 6000
    assert settings.model_repository == (tmp_path / "models").resolve()
    assert settings.tasks["topic"].confidence_threshold == 0.5
    # Unset values are left to the model card (router.tasks resolves them).
    assert settings.tasks["topic"].cache_namespace is None
    assert settings.tasks["topic"].max_text_length is None


def test_environment_overrides_a_task_the_file_does_not_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHYARD_ROUTER_TASKS__INTENTS__CONFIDENCE_THRESHOLD", "0.8")
    settings = load_settings(_write(tmp_path, "model_repository: models\n"))
    assert settings.tasks["intents"].confidence_threshold == 0.8


@pytest.mark.parametrize(
    "text",
    [
        "model_repository: m\ntasks:\n  topic: {model: topic, confidence_threshold: 2}\n",
        "model_repository: m\ntasks:\n  topic: {threshold: 0.5}\n",
        "model_repository: m\ngrpc_port: lots\ntasks:\n  topic: {model: topic}\n",
    ],
)
def test_invalid_settings_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_settings(_write(tmp_path, text))


def test_a_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a mapping"):
        load_settings(_write(tmp_path, "- just\n- a list\n"))
