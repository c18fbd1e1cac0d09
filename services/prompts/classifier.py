"""A prompted LLM as a classifier: render each text's prompt, check it fits the context,
score every label, and turn the label log-likelihoods into probabilities."""

from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from services.contracts.model_io import softmax
from services.prompts.errors import PromptError
from services.prompts.llm import LLM_NAME, PromptedLLM, PromptPrefix
from services.prompts.templates import PromptTemplate

__all__ = ["FewShotClassifier", "PromptAnswer"]


@dataclass(frozen=True)
class PromptAnswer:
    label: str
    scores: dict[str, float]
    prompt_tokens: int


@dataclass(frozen=True)
class _Encoded:
    prefix: str
    prefix_ids: list[int]
    ids: list[int]
    candidates: list[list[int]]


class FewShotClassifier:
    def __init__(self, llm: PromptedLLM, template: PromptTemplate) -> None:
        self._llm = llm
        self._template = template

    def classify(
        self,
        texts: Sequence[str],
        examples: Sequence[Sequence[tuple[str, str]]],
        show_progress: bool = False,
    ) -> list[PromptAnswer]:
        """Each text's answer after its examples. Every prompt is checked against the context
        length before the first one runs, so an oversized one fails fast."""
        encoded = [
            self._encode(index, text, ex)
            for index, (text, ex) in enumerate(zip(texts, examples, strict=True))
        ]
        answers = []
        shared: PromptPrefix | None = None
        shared_text = ""
        for prompt in tqdm(encoded, desc="prompting", unit="text", disable=not show_progress):
            # Prompts with the same examples share their prefix: run it once.
            if shared is None or prompt.prefix != shared_text:
                shared, shared_text = self._llm.run_prefix(prompt.prefix_ids), prompt.prefix
            sums = self._llm.score(prompt.ids, prompt.candidates, shared)
            probabilities = softmax(sums)
            labels = self._template.labels
            best = max(range(len(labels)), key=sums.__getitem__)
            answers.append(
                PromptAnswer(
                    label=labels[best],
                    scores={
                        label: float(p) for label, p in zip(labels, probabilities, strict=True)
                    },
                    prompt_tokens=len(prompt.ids),
                )
            )
        return answers

    def _encode(self, index: int, text: str, examples: Sequence[tuple[str, str]]) -> _Encoded:
        rendered = self._template.render(examples, text)
        prefix_ids = self._llm.encode(rendered.prefix)
        ids = prefix_ids + self._llm.encode(rendered.query)
        candidates = [self._llm.encode(candidate) for candidate in rendered.candidates]
        needed = len(ids) + max(len(candidate) for candidate in candidates)
        if needed > self._llm.context_length:
            raise PromptError(
                f"the prompt for text {index} needs {needed} tokens, over the "
                f"{self._llm.context_length}-token context of {LLM_NAME}; use fewer shots or "
                "shorter texts (--max-chars)"
            )
        return _Encoded(rendered.prefix, prefix_ids, ids, candidates)
