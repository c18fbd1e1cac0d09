"""Where every onnxruntime session comes from: one choice of execution provider per process.

The ONNX teacher, the in-process student, Triton's runner and the GPU check all open their
models here. `auto` runs on CUDA (CUDAExecutionProvider, then CPU for the operators it lacks)
when CUDA really works, else on CPU; `cpu` and `cuda` ask for one of them, and `cuda` where
CUDA cannot run is an error that says why.

Whether CUDA works is found out once per process, on the first `auto` or `cuda` session, and
logged in one line. The list of available providers cannot tell: the `onnxruntime-gpu` wheel
lists CUDAExecutionProvider on any machine, and a session asked for it on a machine without
the CUDA libraries or a GPU logs a loud error and silently runs on CPU. So the first session
is created with CUDA first and onnxruntime's logger quieted, and the providers that session
really got decide.

onnxruntime itself is imported only when a session is made, so importing this module costs
nothing, and a missing onnxruntime is an `OnnxRuntimeMissing` naming the extras that bring it.
"""

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "CudaUnavailable",
    "CudaVerdict",
    "OnnxRuntimeMissing",
    "ProviderPreference",
    "create_session",
    "cuda_verdict",
    "import_onnxruntime",
    "session_provider",
]

ProviderPreference = Literal["auto", "cpu", "cuda"]
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
# onnxruntime's own default; it has no getter to read the level back after the probe.
_DEFAULT_LOG_SEVERITY = 2
_QUIET_LOG_SEVERITY = 4  # fatal only: hides the error of a CUDA provider that cannot load

_log = logging.getLogger(__name__)


class OnnxRuntimeMissing(ImportError):
    """onnxruntime is not installed: it comes with the `cpu` or `gpu` extra, never both."""


class CudaUnavailable(RuntimeError):
    """CUDA was asked for, and this process cannot run onnxruntime on it."""


@dataclass(frozen=True)
class CudaVerdict:
    """Whether onnxruntime runs on CUDA in this process, and if not, why."""

    usable: bool
    reason: str = ""
    """Why CUDA is not used; empty when it is."""


_verdict: CudaVerdict | None = None
_verdict_lock = threading.Lock()


def import_onnxruntime() -> Any:
    """The onnxruntime module, or `OnnxRuntimeMissing` with the install command."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxRuntimeMissing(
            f"onnxruntime is not installed ({exc}): pip install 'switchyard-serving[cpu]' for "
            "CPU, or 'switchyard-serving[gpu]' for CUDA (one of the two, never both)"
        ) from exc
    return onnxruntime


def cuda_verdict() -> CudaVerdict | None:
    """What this process found out about CUDA; None before its first `auto` or `cuda` session."""
    return _verdict


def session_provider(session: "onnxruntime.InferenceSession") -> str:
    """The provider a session runs on first: `CUDA_PROVIDER` or `CPU_PROVIDER`."""
    providers: list[str] = session.get_providers()
    return providers[0]


def create_session(
    model: Path | str,
    provider: ProviderPreference = "auto",
    threads: int | None = None,
    spinning: bool = True,
    device_id: int = 0,
) -> "onnxruntime.InferenceSession":
    """An onnxruntime session for the model file at `model`.

    `threads` sets the intra-op threads (None: onnxruntime's choice, one per core); the graphs
    run their nodes in sequence, so one inter-op thread is enough. `spinning=False` keeps idle
    threads from spinning, for processes that hold several sessions that take turns.
    `device_id` is the GPU of a CUDA session. OnnxRuntimeMissing without onnxruntime;
    CudaUnavailable for `cuda` where CUDA does not run.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = str(model)
    if provider == "cpu":
        return ort.InferenceSession(path, options, providers=[CPU_PROVIDER])
    with _verdict_lock:
        probed = None if _verdict is not None else _probe(ort, path, options, device_id)
    verdict = _verdict
    assert verdict is not None  # set by the probe
    if not verdict.usable:
        if provider == "cuda":
            raise CudaUnavailable(f"onnxruntime cannot run on CUDA here: {verdict.reason}")
        return probed or ort.InferenceSession(path, options, providers=[CPU_PROVIDER])
    session = probed or ort.InferenceSession(
        path, options, providers=[(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]
    )
    if provider == "cuda" and session_provider(session) != CUDA_PROVIDER:
        raise CudaUnavailable(f"onnxruntime did not start {path} on CUDA device {device_id}")
    return session


def _probe(
    ort: Any, path: str, options: Any, device_id: int
) -> "onnxruntime.InferenceSession | None":
    """Find out whether CUDA works (sets `_verdict`, logs it once); the session made to find
    out, when one was made."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        _record(
            CudaVerdict(
                False,
                "this onnxruntime build has no CUDA provider (the `onnxruntime` wheel; "
                "'switchyard-serving[gpu]' brings onnxruntime-gpu)",
            ),
            expected_cuda=False,
        )
        return None
    ort.set_default_logger_severity(_QUIET_LOG_SEVERITY)
    try:
        session = ort.InferenceSession(
            path, options, providers=[(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]
        )
    finally:
        ort.set_default_logger_severity(_DEFAULT_LOG_SEVERITY)
    on_cuda = session_provider(session) == CUDA_PROVIDER
    _record(CudaVerdict(True) if on_cuda else CudaVerdict(False, _cuda_failure(ort)), True)
    return session


def _record(verdict: CudaVerdict, expected_cuda: bool) -> None:
    global _verdict
    _verdict = verdict
    if verdict.usable:
        _log.info("onnxruntime runs on %s", CUDA_PROVIDER)
        return
    # A CUDA build that ends up on CPU is a surprise; a CPU build on CPU is what was installed.
    level = logging.WARNING if expected_cuda else logging.INFO
    _log.log(level, "onnxruntime runs on %s; CUDA is not used: %s", CPU_PROVIDER, verdict.reason)


def _cuda_failure(ort: Any) -> str:
    """Why a CUDA build of onnxruntime fell back to CPU: the library its CUDA provider misses
    (the quieted log said it), or else no usable GPU."""
    import ctypes

    cuda = getattr(ort, "cuda_version", "") or "of its build"
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return (
            f"its CUDA provider does not load ({exc}); onnxruntime-gpu "
            f"{ort.__version__} needs the CUDA {cuda} and cuDNN 9 libraries"
        )
    return "its CUDA provider loads but did not start: no usable GPU or driver"
