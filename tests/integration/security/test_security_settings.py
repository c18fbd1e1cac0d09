"""Security settings are checked at startup: one clear line, and never a credential in it."""

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from router.settings import RouterSettings, load_settings
from router.tls import ServerCertificates
from services.batch.job import BatchSettings
from services.cli import app
from tests.integration.conftest import run_switchyard
from tests.integration.security.conftest import Pki

BASE = "model_repository: models\ntasks:\n  topic: {model: topic}\n"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(BASE + extra, encoding="utf-8")
    return path


def test_a_password_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    config = write_config(tmp_path, f"redis_password: {password}\n")
    result = run_switchyard("router", "serve", "--config", str(config), check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "redis_password must not be in the settings file" in lines[0]
    assert "SWITCHYARD_ROUTER_REDIS_PASSWORD" in lines[0]
    assert password not in result.stderr + result.stdout


def test_a_password_in_the_settings_files_redis_url_is_refused(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(16)
    config = write_config(tmp_path, f"redis_url: redis://:{password}@10.0.0.1:6379/0\n")
    with pytest.raises(ValueError, match="redis_url holds a password") as error:
        load_settings(config)
    assert password not in str(error.value)


def test_credentials_from_the_environment_are_accepted_and_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv("SWITCHYARD_ROUTER_REDIS_USERNAME", "switchyard")
    monkeypatch.setenv("SWITCHYARD_ROUTER_REDIS_PASSWORD", password)
    monkeypatch.setenv("SWITCHYARD_BATCH_REDIS_PASSWORD", password)
    settings = load_settings(write_config(tmp_path))
    assert settings.redis_username == "switchyard"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == password
    assert password not in repr(settings) + str(settings)
    batch = BatchSettings()
    assert batch.redis_password is not None
    assert batch.redis_password.get_secret_value() == password


def test_credentials_in_the_url_and_in_settings_are_refused_without_echoing_them(
    tmp_path: Path,
) -> None:
    in_url, in_env = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {
        "SWITCHYARD_ROUTER_REDIS_URL": f"redis://:{in_url}@127.0.0.1:6379/0",
        "SWITCHYARD_ROUTER_REDIS_PASSWORD": in_env,
    }
    result = CliRunner().invoke(
        app, ["router", "serve", "--config", str(write_config(tmp_path))], env=env
    )
    assert result.exit_code == 2
    assert "give them in one place" in result.output
    assert in_url not in result.output and in_env not in result.output


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["tls_cert_file"], "tls_cert_file and tls_key_file go together"),
        (["tls_key_file"], "tls_cert_file and tls_key_file go together"),
        (["tls_client_ca_file"], "tls_client_ca_file needs tls_cert_file"),
        (["redis_tls_cert_file"], "redis_tls_cert_file and redis_tls_key_file go together"),
    ],
)
def test_incomplete_tls_settings_are_refused(
    tmp_path: Path, pki: Pki, files: list[str], message: str
) -> None:
    paths = {
        "tls_cert_file": pki.cert_file,
        "tls_key_file": pki.key_file,
        "tls_client_ca_file": pki.ca_file,
        "redis_tls_cert_file": pki.client_cert_file,
    }
    with pytest.raises(ValidationError, match=message):
        RouterSettings(
            model_repository=tmp_path,
            tasks={"topic": {"model": "topic"}},
            **{name: paths[name] for name in files},
        )


def test_a_missing_certificate_file_is_one_line_at_startup(tmp_path: Path, pki: Pki) -> None:
    # Relative paths in the file are relative to the file.
    config = write_config(tmp_path, f"tls_cert_file: missing.pem\ntls_key_file: {pki.key_file}\n")
    result = run_switchyard("router", "serve", "--config", str(config), check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"tls_cert_file: Value error, cannot read {tmp_path / 'missing.pem'}" in result.stderr


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(ValueError, match="not a usable PEM set"):
        ServerCertificates(pki.cert_file, other_pki.key_file, None)
    pki.ca_file.write_text("not a certificate")
    with pytest.raises(ValueError, match="not a usable PEM set"):
        ServerCertificates(pki.cert_file, pki.key_file, pki.ca_file)
