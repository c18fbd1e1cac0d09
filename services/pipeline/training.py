"""Torch helpers shared by teacher and student: tokenised batches, the training loop, inference."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from services.pipeline.datasets import Example

__all__ = ["TrainSummary", "accuracy", "count_parameters", "encode", "predict_logits", "train_loop"]


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenise a batch, padded to its longest text."""
    batch = tokenizer(
        list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    return dict(batch)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 32,
    description: str | None = None,
) -> npt.NDArray[np.float32]:
    """Logits for (non-empty) `texts` in order; batches are formed by length to cut padding."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(text) for text in texts], kind="stable")
    chunks = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=description, disable=description is None, unit="batch"):
        batch = encode(tokenizer, [texts[i] for i in order[start : start + batch_size]], max_length)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        chunks.append(model(**batch).logits.float().cpu().numpy())
    by_length = np.concatenate(chunks)
    logits: npt.NDArray[np.float32] = np.empty_like(by_length)
    logits[order] = by_length
    return logits


@dataclass(frozen=True)
class TrainSummary:
    steps: int
    final_loss: float
    best_validation_accuracy: float
    best_step: int


def _batches(num_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless shuffled epochs of example indices."""
    while True:
        permutation = torch.randperm(num_examples, generator=generator).tolist()
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield permutation[start : start + batch_size]


def accuracy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    max_length: int,
) -> float:
    logits = predict_logits(model, tokenizer, [e.text for e in examples], max_length)
    return float(np.mean(logits.argmax(1) == np.array([e.label for e in examples])))


def train_loop(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    num_examples: int,
    loss_for: Callable[[list[int]], torch.Tensor],
    validation: Sequence[Example],
    max_length: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    evaluations: int,
    description: str,
) -> TrainSummary:
    """AdamW, linear warm-up and decay; keeps the trainable weights that did best on validation.

    Model selection looks at the validation split only, never at the test split.
    """
    generator = torch.Generator().manual_seed(seed)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    checkpoints = {round(steps * (i + 1) / evaluations) for i in range(evaluations)}
    best_accuracy, best_step = -1.0, 0
    best_weights: dict[str, torch.Tensor] = {}
    batches = _batches(num_examples, min(batch_size, num_examples), generator)
    loss_value = float("nan")
    progress = tqdm(range(1, steps + 1), desc=description, unit="step")
    for step in progress:
        model.train()
        loss = loss_for(next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        progress.set_postfix(loss=f"{loss_value:.3f}")
        if step in checkpoints:
            score = accuracy(model, tokenizer, validation, max_length)
            progress.set_postfix(loss=f"{loss_value:.3f}", val_acc=f"{score:.3f}")
            if score > best_accuracy:
                best_accuracy, best_step = score, step
                best_weights = {name: p.detach().clone() for name, p in trainable}
    with torch.no_grad():
        for name, parameter in trainable:
            parameter.copy_(best_weights[name])
    return TrainSummary(steps, loss_value, best_accuracy, best_step)
