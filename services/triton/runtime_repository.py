"""The runtime model repository that the bundled `tritonserver` serves.

It mirrors the pipeline's model repository: each ONNX model keeps its `config.pbtxt` except
that the python backend runs it (with `onnx_runner.py`), and each version folder links to the
original `model.onnx`. The source repository stays untouched for NVIDIA's images.

A version is mirrored only after onnxruntime has loaded it and its tensors match the config,
so a broken or half-copied version never reaches Triton and never disturbs the served ones.

Rollouts: the newest good version is mirrored, and so is the one before it, so Triton (told
to keep the two latest) serves both: the routers move to the new one (each within a second
or two) without a failed request, a canary runs one beside the other, and a rollback is
instant. The version before those two is released when the newest arrives. With
`previous_version_seconds`, the one before the newest is released that long after the newest
arrived, to save its memory at the cost of rollbacks. A broken new version never displaces
the versions before it.
"""

import logging
import py_compile
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.contracts.model_io import TextEncoder
from services.contracts.model_repository import (
    CONFIG_FILE,
    MODEL_FILE,
    SERVED_VERSIONS,
    ModelVersion,
    model_names,
    parse_config,
    render_config,
    version_dirs,
)
from services.contracts.onnx_session import OnnxRuntimeMissing, create_session

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


def _compile_runner(version_folder: Path) -> None:
    """Write the runner's bytecode where the backend stub would: a stub that writes it itself,
    at the first load, changes the version folder, and Triton's repository poll then loads
    the model a second time (seen: a reload 1-3 s after every start and every new version,
    each a new onnxruntime session, with the model's statistics reset)."""
    cache = version_folder / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(version_folder / "model.py"), cfile=str(cache), doraise=True)


def _check_version(model_file: Path, input_names: list[str], output_names: list[str]) -> None:
    """Raise ValueError unless onnxruntime loads the file and its tensors match the config,
    and the files the routers load beside it (card, labels, tokenizer) load too: a version
    the routers cannot use must never displace one they serve."""
    if not model_file.is_file():
        raise ValueError(f"no {MODEL_FILE}")
    try:
        # On CPU: the check needs the graph's tensors, not speed, and no GPU memory.
        session = create_session(model_file, "cpu")
    except OnnxRuntimeMissing:
        raise  # no version is at fault
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ValueError(f"onnxruntime cannot load {MODEL_FILE}: {exc}") from None
    graph_inputs = {node.name for node in session.get_inputs()}
    graph_outputs = {node.name for node in session.get_outputs()}
    if set(input_names) != graph_inputs or not set(output_names) <= graph_outputs:
        raise ValueError(
            f"tensors do not match config.pbtxt: graph inputs {sorted(graph_inputs)}, "
            f"outputs {sorted(graph_outputs)}; config inputs {input_names}, outputs {output_names}"
        )
    files = ModelVersion(model_file.parent.parent.name, model_file.parent.name, model_file.parent)
    try:
        card = files.card()
        labels = files.labels()
        TextEncoder.from_file(files.tokenizer_file, card.inputs)
    except Exception as exc:  # json, pydantic and tokenizers raise many kinds
        raise ValueError(f"the routers could not load it: {exc}") from None
    if set(card.inputs) != graph_inputs:
        raise ValueError(
            f"its card's inputs {card.inputs} are not the graph's {sorted(graph_inputs)}"
        )
    if not labels:
        raise ValueError("its labels file lists no label")


class RuntimeRepository:
    def __init__(
        self,
        source: Path,
        runtime: Path,
        response_cache: bool,
        onnx_threads: int | None = None,
        previous_version_seconds: float | None = None,
    ) -> None:
        self.source = source
        self.runtime = runtime
        self._response_cache = response_cache
        self._onnx_threads = onnx_threads
        self._previous_version_seconds = previous_version_seconds
        # Each version's verdict, by model file, with the file's change time it was made at.
        self._verdicts: dict[Path, tuple[float, bool]] = {}
        # When each (model, version) was first mirrored, on the monotonic clock.
        self._mirrored_at: dict[tuple[str, str], float] = {}

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
        config.version_policy.latest.num_versions = SERVED_VERSIONS
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

        inputs = [tensor.name for tensor in config.input]
        outputs = [tensor.name for tensor in config.output]
        # Newest first: the newest good version, and the good one before it while it is new.
        good: list[tuple[str, Path]] = []
        for source_version in reversed(version_dirs(source_model)):
            model_file = source_version / MODEL_FILE
            if self._is_good(f"{name}/{source_version.name}", model_file, inputs, outputs, report):
                good.append((source_version.name, model_file))
                if len(good) == SERVED_VERSIONS:
                    break
        keep = good[:1]
        if len(good) == SERVED_VERSIONS:
            newest_since = self._mirrored_at.get((name, good[0][0]), time.monotonic())
            grace = self._previous_version_seconds
            if grace is None or time.monotonic() - newest_since < grace:
                keep.append(good[1])
        for version, model_file in keep:
            if not (runtime_model / version).exists():
                partial = runtime_model / f".{version}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()
                (partial / "model.py").symlink_to(RUNNER_FILE)
                (partial / MODEL_FILE).symlink_to(model_file.resolve())
                _compile_runner(partial)
                partial.rename(runtime_model / version)
                self._mirrored_at.setdefault((name, version), time.monotonic())
                report.added.append(f"{name}/{version}")
        kept = {version for version, _ in keep}
        for stale in [p for p in runtime_model.iterdir() if p.is_dir()]:
            if stale.name not in kept:
                shutil.rmtree(stale)
                report.removed.append(f"{name}/{stale.name}")

    def _is_good(
        self,
        label: str,
        model_file: Path,
        input_names: list[str],
        output_names: list[str],
        report: SyncReport,
    ) -> bool:
        """Whether onnxruntime loads the version and its tensors match the config; checked
        again only when its model file changes."""
        stamp = model_file.stat().st_mtime if model_file.exists() else 0.0
        known = self._verdicts.get(model_file)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            _check_version(model_file, input_names, output_names)
        except ValueError as exc:
            self._verdicts[model_file] = (stamp, False)
            report.rejected[label] = str(exc)
            _log.warning("not serving %s: %s", label, exc)
            return False
        self._verdicts[model_file] = (stamp, True)
        return True
