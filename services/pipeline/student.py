"""The distilled model, trained on the teacher's soft labels. Its starting point is the
packaged paraphrase-MiniLM-L3, a local Hugging Face model folder, or the tuned teacher's
first layers."""

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import numpy_helper
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from services.contracts.build_report import StudentTraining
from services.pipeline import assets
from services.pipeline.datasets import Example
from services.pipeline.errors import PipelineError
from services.pipeline.task_file import PACKAGED_STUDENT, StudentSpec
from services.pipeline.training import count_parameters, encode, train_loop

__all__ = ["distill_student", "load_l3_encoder_weights"]

_ONNX_PREFIX = "model.0.auto_model."


def load_l3_encoder_weights(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Rebuild BertModel weights from the packaged ONNX graph of paraphrase-MiniLM-L3-v2.

    The export kept names for embeddings, biases and LayerNorms but not for the MatMul
    weights; each weight is named after the bias its MatMul output is added to.
    """
    graph = onnx.load(str(onnx_path)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    adds_of: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "Add":
            for name in node.input:
                adds_of.setdefault(name, []).append(node)
    weights = {
        name.removeprefix(_ONNX_PREFIX): torch.from_numpy(array.copy())
        for name, array in initializers.items()
        if name.startswith(_ONNX_PREFIX)
    }
    for node in graph.node:
        matrices = [i for i in node.input if i in initializers and not i.startswith(_ONNX_PREFIX)]
        if node.op_type != "MatMul" or not matrices:
            continue
        biases = [
            name
            for add in adds_of.get(node.output[0], [])
            for name in add.input
            if name.startswith(_ONNX_PREFIX) and name.endswith(".bias")
        ]
        (bias,) = biases
        module = bias.removeprefix(_ONNX_PREFIX).removesuffix("bias")
        weights[module + "weight"] = torch.from_numpy(initializers[matrices[0]].T.copy())
    return weights


def _l3_student(labels: list[str]) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=3,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        **_label_maps(labels),
    )
    model = BertForSequenceClassification(config)
    encoder_weights = load_l3_encoder_weights(assets.paraphrase_minilm_l3_onnx())
    missing, unexpected = model.bert.load_state_dict(encoder_weights, strict=False)
    # The sentence-embedding export has no pooler: it starts fresh with the classifier.
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise RuntimeError(f"L3 weights do not fit BERT: missing={missing} extra={unexpected}")
    return model


def _label_maps(labels: list[str]) -> dict[str, object]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def _starting_point(
    spec: StudentSpec, labels: list[str], teacher_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The untrained student, its tokenizer, and the name its report gives its base."""
    if spec.teacher_layers is not None:
        layers = AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
        if spec.teacher_layers >= layers:
            raise PipelineError(
                f"student.teacher_layers is {spec.teacher_layers}, but the teacher has only "
                f"{layers} layers"
            )
        # Loading with fewer layers keeps the embeddings, the first layers and the head.
        model = AutoModelForSequenceClassification.from_pretrained(
            teacher_dir, num_hidden_layers=spec.teacher_layers
        )
        name = f"teacher's first {spec.teacher_layers} layers"
        return model, AutoTokenizer.from_pretrained(teacher_dir), name
    if spec.base == PACKAGED_STUDENT:
        # paraphrase-MiniLM-L3 shares the uncased BERT vocabulary of all-MiniLM-L6.
        tokenizer = AutoTokenizer.from_pretrained(assets.minilm_l6_dir())
        return _l3_student(labels), tokenizer, PACKAGED_STUDENT
    base = Path(spec.base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, ignore_mismatched_sizes=True, **_label_maps(labels)
    )
    return model, AutoTokenizer.from_pretrained(base), base.name


def distill_student(
    labels: list[str],
    train: list[Example],
    teacher_train_logits: npt.NDArray[np.float32],
    validation: list[Example],
    spec: StudentSpec,
    max_length: int,
    teacher_dir: Path,
    seed: int,
    out_dir: Path,
    description: str,
) -> StudentTraining:
    """Knowledge distillation: KL to the teacher's softened distribution, mixed with hard labels."""
    torch.manual_seed(seed)
    model, tokenizer, base_name = _starting_point(spec, labels, teacher_dir)
    tokenizer.model_max_length = max_length
    temperature = spec.temperature
    hard_weight = spec.hard_label_weight
    texts = [example.text for example in train]
    targets = torch.tensor([example.label for example in train])
    soft_targets = torch.softmax(torch.from_numpy(teacher_train_logits) / temperature, dim=-1)

    def loss_for(indices: list[int]) -> torch.Tensor:
        batch = encode(tokenizer, [texts[i] for i in indices], max_length)
        logits = model(**batch).logits
        soft = torch.nn.functional.kl_div(
            torch.log_softmax(logits / temperature, dim=-1),
            soft_targets[indices],
            reduction="batchmean",
        ) * (temperature**2)
        hard = torch.nn.functional.cross_entropy(logits, targets[indices])
        return (1 - hard_weight) * soft + hard_weight * hard

    summary = train_loop(
        model,
        tokenizer,
        len(train),
        loss_for,
        validation,
        max_length=max_length,
        steps=spec.steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        seed=seed,
        evaluations=spec.evaluations,
        description=description,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return StudentTraining(
        base_model=base_name,
        params=count_parameters(model),
        temperature=temperature,
        hard_label_weight=hard_weight,
        steps=summary.steps,
        best_step=summary.best_step,
        validation_accuracy=summary.best_validation_accuracy,
    )
