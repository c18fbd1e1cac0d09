"""Which labelled examples go into a prompt: a seeded random draw shared by every query, or
each query's nearest neighbours by sentence embedding (all-MiniLM-L6-v2, offline)."""

import random
from collections.abc import Sequence
from typing import Literal

import torch
from transformers import AutoModel, AutoTokenizer

from services.pipeline import assets
from services.prompts.errors import PromptError

__all__ = ["SELECTIONS", "Selection", "choose_examples", "parse_selection"]

Selection = Literal["random", "nearest"]
SELECTIONS: tuple[Selection, ...] = ("random", "nearest")
Labelled = tuple[str, str]


def parse_selection(value: str) -> Selection:
    for selection in SELECTIONS:
        if value == selection:
            return selection
    raise PromptError(f"unknown selection {value!r}; use {' or '.join(SELECTIONS)}")


def choose_examples(
    selection: Selection,
    pool: Sequence[Labelled],
    shots: int,
    queries: Sequence[str],
    seed: int,
) -> list[list[Labelled]]:
    """`shots` examples from `pool` for each query. Random: the same draw for all, so their
    prompts share a prefix that runs once. Nearest: the most similar last, next to the query."""
    if shots > len(pool):
        raise PromptError(
            f"{shots} shots asked for, but the example pool holds only {len(pool)} examples"
        )
    if shots == 0:
        return [[] for _ in queries]
    if selection == "random":
        drawn = random.Random(seed).sample(list(pool), shots)
        return [drawn for _ in queries]
    vectors = _embed([text for text, _ in pool] + list(queries))
    similarity = vectors[len(pool) :] @ vectors[: len(pool)].T
    nearest = similarity.topk(shots, dim=1).indices.tolist()
    return [[pool[index] for index in reversed(row)] for row in nearest]


@torch.inference_mode()
def _embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings."""
    folder = assets.minilm_l6_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        batches.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(batches)
