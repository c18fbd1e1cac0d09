"""A student's tensors: how texts become its int64 inputs, and its logits become scores.

Everything that runs an exported student uses this one path: the router (through Triton),
the pipeline's evaluation, prompt evaluation and the benchmarks (onnxruntime in-process).
The graph's inputs are `input_ids`, `attention_mask` and, only when the graph declares it,
`token_type_ids` (MPNet has none); its output is `logits`. The serving `tokenizer.json`
carries the truncation length fixed at export time.
"""

import bisect
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

__all__ = [
    "INPUT_NAMES",
    "MASK_NAME",
    "OUTPUT_NAME",
    "Inputs",
    "TextEncoder",
    "length_groups",
    "softmax",
    "token_lengths",
]

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
MASK_NAME = "attention_mask"
Inputs = dict[str, npt.NDArray[np.int64]]


class TextEncoder:
    """Tokenises texts into the arrays a graph with `input_names` takes, padded on the right."""

    def __init__(self, tokenizer: Tokenizer, input_names: Sequence[str]) -> None:
        unknown = set(input_names) - set(INPUT_NAMES)
        if unknown:
            raise ValueError(f"unknown model inputs {sorted(unknown)}; known: {INPUT_NAMES}")
        self.input_names = list(input_names)
        self.pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
        truncation = tokenizer.truncation or {}
        self.max_length: int | None = truncation.get("max_length")
        # Padding happens here, to a length the caller picks; the tokenizer only truncates.
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, tokenizer_file: Path, input_names: Sequence[str]) -> "TextEncoder":
        return cls(Tokenizer.from_file(str(tokenizer_file)), input_names)

    def encode(self, texts: Sequence[str], buckets: Sequence[int] = ()) -> Inputs:
        """Arrays of shape (len(texts), length). Without `buckets`, `length` is the longest
        text's; with them, the smallest of the sorted `buckets` that holds it (so requests of
        equal shape can be batched together), or the tokenizer's max length when none does."""
        encodings = self._tokenizer.encode_batch(list(texts))
        token_ids = [encoding.ids for encoding in encodings]
        longest = max(map(len, token_ids), default=0)
        length = longest
        if buckets:
            index = bisect.bisect_left(buckets, longest)
            length = buckets[index] if index < len(buckets) else self.max_length or longest
        if self.max_length is not None:
            length = min(max(length, longest), self.max_length)
        shape = (len(texts), length)
        arrays = {
            name: np.full(shape, self.pad_id if name == "input_ids" else 0, dtype=np.int64)
            for name in self.input_names
        }
        for row, (encoding, ids) in enumerate(zip(encodings, token_ids, strict=True)):
            for name, array in arrays.items():
                if name == "input_ids":
                    array[row, : len(ids)] = ids
                elif name == "attention_mask":
                    array[row, : len(ids)] = 1
                else:
                    array[row, : len(ids)] = encoding.type_ids
        return arrays


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Row-wise probabilities of a (rows, classes) array of logits or log-likelihoods."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    probabilities: npt.NDArray[np.float64] = shifted / shifted.sum(axis=-1, keepdims=True)
    return probabilities


def token_lengths(attention_mask: npt.NDArray[np.int64]) -> list[int]:
    """Each row's length up to its last attended token: the padding is on the right, and a
    row's outputs do not depend on padding its mask hides. A row with no token keeps one."""
    mask = np.asarray(attention_mask)
    if mask.shape[1] == 0:
        return [0] * mask.shape[0]
    last = mask.shape[1] - np.argmax(mask[:, ::-1] != 0, axis=1)
    last[~mask.any(axis=1)] = 1
    return [int(length) for length in last]


def length_groups(lengths: Sequence[int]) -> dict[int, list[int]]:
    """The positions of `lengths` by length, in order: the rows that can run together
    trimmed to their own tokens."""
    groups: dict[int, list[int]] = {}
    for position, length in enumerate(lengths):
        groups.setdefault(length, []).append(position)
    return groups
