"""The large tuned model: a pretrained encoder with a LoRA adapter, merged after training."""

from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from services.contracts.build_report import LoraSummary, TeacherTraining
from services.pipeline.datasets import Example
from services.pipeline.errors import PipelineError
from services.pipeline.task_file import TeacherSpec
from services.pipeline.training import count_parameters, encode, train_loop

__all__ = ["default_target_modules", "load_classifier", "train_teacher"]

# LoRA goes on the attention projections (query, key, value, output), as in the LoRA paper.
_ATTENTION_MODULES = {
    "bert": r".*attention\.(self\.(query|key|value)|output\.dense)",
    "mpnet": r".*attention\.attn\.(q|k|v|o)",
}


def default_target_modules(model_type: str) -> str:
    """The attention projections of a known encoder; PipelineError for other model types."""
    if model_type not in _ATTENTION_MODULES:
        known = ", ".join(sorted(_ATTENTION_MODULES))
        raise PipelineError(
            f"no default LoRA target modules for model type {model_type!r} (known: {known}); "
            "set teacher.target_modules in the task file"
        )
    return _ATTENTION_MODULES[model_type]


def load_classifier(model_dir: Path) -> tuple[PreTrainedModel, Any]:
    """A saved sequence classifier and its tokenizer, in eval mode."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def train_teacher(
    base_dir: Path,
    base_name: str,
    labels: list[str],
    train: list[Example],
    validation: list[Example],
    spec: TeacherSpec,
    seed: int,
    out_dir: Path,
    description: str,
) -> TeacherTraining:
    """Train a LoRA adapter plus classification head, merge it, save a plain HF model folder."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=spec.target_modules or default_target_modules(base.config.model_type),
    )
    model = get_peft_model(base, lora)
    trainable_params, all_params = model.get_nb_trainable_parameters()
    texts = [example.text for example in train]
    targets = torch.tensor([example.label for example in train])

    def loss_for(indices: list[int]) -> torch.Tensor:
        batch = encode(tokenizer, [texts[i] for i in indices], spec.max_length)
        logits = model(**batch).logits
        return torch.nn.functional.cross_entropy(logits, targets[indices])

    summary = train_loop(
        model,
        tokenizer,
        len(train),
        loss_for,
        validation,
        max_length=spec.max_length,
        steps=spec.steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        seed=seed,
        evaluations=spec.evaluations,
        description=description,
    )
    merged = cast(PreTrainedModel, model.merge_and_unload())
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return TeacherTraining(
        base_model=base_name,
        params=count_parameters(merged),
        trainable_params=trainable_params,
        trainable_fraction=trainable_params / all_params,
        lora=LoraSummary(r=lora.r, alpha=lora.lora_alpha, target_modules=lora.target_modules),
        max_length=spec.max_length,
        steps=summary.steps,
        best_step=summary.best_step,
        validation_accuracy=summary.best_validation_accuracy,
    )
