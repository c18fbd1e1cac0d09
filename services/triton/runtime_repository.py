"""The runtime model repository that the bundled `tritonserver` serves.

It mirrors the pipeline's model repository: each ONNX model keeps its `config.pbtxt` except
that the python backend runs it (with `onnx_runner.py`), and each version folder links to the
original `model.onnx`. The source repository stays untouched for NVIDIA's images.

A version is mirrored only after onnxruntime has loaded it and its tensors match the config,
so a broken or half-copied version never reaches Triton and never disturbs the served ones.
"""

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from services.contracts.model_repository import (
    CONFIG_FILE,
    MODEL_FILE,
    model_names,
    parse_config,
    render_config,
    version_dirs,
)

__all__ = ["RUNNER_FILE", "RuntimeRepository", "SyncReport"]

RUNNER_FILE = Path(__file__).with_name("onnx_runner.py")
_log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


def _replace_file(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _check_version(model_file: Path, input_names: list[str], output_names: list[str]) -> None:
    """Raise ValueError unless onnxruntime loads the file and its tensors match the config."""
    if not model_file.is_file():
        raise ValueError(f"no {MODEL_FILE}")
    try:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ValueError(f"onnxruntime cannot load {MODEL_FILE}: {exc}") from None
    graph_inputs = {node.name for node in session.get_inputs()}
    graph_outputs = {node.name for node in session.get_outputs()}
    if set(input_names) != graph_inputs or not set(output_names) <= graph_outputs:
        raise ValueError(
            f"tensors do not match config.pbtxt: graph inputs {sorted(graph_inputs)}, "
            f"outputs {sorted(graph_outputs)}; config inputs {input_names}, outputs {output_names}"
        )


class RuntimeRepository:
    def __init__(
        self, source: Path, runtime: Path, response_cache: bool, onnx_threads: int | None = None
    ) -> None:
        self.source = source
        self.runtime = runtime
        self._response_cache = response_cache
        self._onnx_threads = onnx_threads
        # Rejected versions are checked again only when their model file changes.
        self._rejected: dict[Path, float] = {}

    def sync(self) -> SyncReport:
        """Bring the runtime repository in line with the source repository."""
        report = SyncReport()
        self.runtime.mkdir(parents=True, exist_ok=True)
        models = {name: self.source / name for name in model_names(self.source)}
        for stale in sorted(p for p in self.runtime.iterdir() if p.name not in models):
            shutil.rmtree(stale)
            report.removed.append(stale.name)
        for name, source_model in models.items():
            self._sync_model(name, source_model, report)
        return report

    def _sync_model(self, name: str, source_model: Path, report: SyncReport) -> None:
        try:
            config = parse_config((source_model / CONFIG_FILE).read_text(encoding="utf-8"))
        except ValueError as exc:
            report.rejected[name] = str(exc)
            return
        if config.platform != "onnxruntime_onnx":
            report.rejected[name] = f"platform {config.platform!r} is not onnxruntime_onnx"
            return
        config.ClearField("platform")
        config.backend = "python"
        config.name = name
        if self._response_cache:
            config.response_cache.enable = True
        if self._onnx_threads is not None:
            config.parameters["intra_op_thread_count"].string_value = str(self._onnx_threads)
        runtime_model = self.runtime / name
        runtime_model.mkdir(exist_ok=True)
        config_path = runtime_model / CONFIG_FILE
        rendered = render_config(config)
        if not config_path.exists() or config_path.read_text(encoding="utf-8") != rendered:
            _replace_file(config_path, rendered)

        input_names = [tensor.name for tensor in config.input]
        output_names = [tensor.name for tensor in config.output]
        versions = {path.name: path for path in version_dirs(source_model)}
        for stale in [p for p in runtime_model.iterdir() if p.is_dir()]:
            if stale.name not in versions:
                shutil.rmtree(stale)
                report.removed.append(f"{name}/{stale.name}")
        for version, source_version in versions.items():
            if (runtime_model / version).exists():
                continue
            model_file = source_version / MODEL_FILE
            stamp = model_file.stat().st_mtime if model_file.exists() else 0.0
            if self._rejected.get(model_file) == stamp:
                continue
            try:
                _check_version(model_file, input_names, output_names)
            except ValueError as exc:
                self._rejected[model_file] = stamp
                report.rejected[f"{name}/{version}"] = str(exc)
                _log.warning("not serving %s/%s: %s", name, version, exc)
                continue
            partial = runtime_model / f".{version}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            (partial / "model.py").symlink_to(RUNNER_FILE)
            (partial / MODEL_FILE).symlink_to(model_file.resolve())
            partial.rename(runtime_model / version)
            report.added.append(f"{name}/{version}")
