"""What the pipeline puts into the model repository: the student's `config.pbtxt` for the
onnxruntime backend, and publishing a completely written folder in one rename.

Configs are built as Triton's own `ModelConfig` protobuf (shipped in tritonclient) and
rendered with `services.contracts.model_repository.render_config`, which parses every file
back, so a config that Triton would reject never leaves here.
"""

import os
import shutil
from pathlib import Path

from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as mc

from services.contracts.build_report import ServingRecord
from services.contracts.model_io import OUTPUT_NAME
from services.contracts.model_repository import SERVED_VERSIONS

__all__ = ["publish_directory", "student_config"]


def student_config(
    name: str,
    input_names: list[str],
    num_labels: int,
    serving: ServingRecord,
) -> Message:
    """Config for a student ONNX model: int64 token inputs of any length, float32 logits,
    batched and replicated as the task's serving settings say."""
    config = mc.ModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        max_batch_size=serving.max_batch_size,
        input=[
            mc.ModelInput(name=input_name, data_type=mc.TYPE_INT64, dims=[-1])
            for input_name in input_names
        ],
        output=[mc.ModelOutput(name=OUTPUT_NAME, data_type=mc.TYPE_FP32, dims=[num_labels])],
        instance_group=[
            mc.ModelInstanceGroup(count=serving.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        ],
        # The two newest versions: a new one loads while the previous still serves, so the
        # routers can move over before it goes (it is released when the next one arrives).
        version_policy=mc.ModelVersionPolicy(
            latest=mc.ModelVersionPolicy.Latest(num_versions=SERVED_VERSIONS)
        ),
    )
    if serving.dynamic_batching:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=serving.batch_sizes(),
                max_queue_delay_microseconds=serving.max_queue_delay_us,
            )
        )
    config.parameters["intra_op_thread_count"].string_value = str(serving.threads)
    return config


def publish_directory(staging: Path, target: Path) -> None:
    """Move a completely written `staging` folder to `target`, replacing any previous one.

    Readers see either the old folder or the new one, never a half-written one.
    """
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
