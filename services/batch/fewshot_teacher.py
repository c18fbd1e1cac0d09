"""The prompted LLM as the offline batch job's teacher (`batch run --teacher llm-fewshot`).

It writes the same cache format as the fine-tuned teacher; the generation's metadata records
the prompt template's hash, the shots and how examples were chosen.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.batch.labels import Labelled
from services.contracts.build_report import PromptRecord
from services.pipeline import assets
from services.prompts.classifier import FewShotClassifier
from services.prompts.evaluate import PromptSettings, TaskData, load_template
from services.prompts.llm import LLM_NAME, PromptedLLM
from services.prompts.selection import Selection, choose_examples
from services.prompts.templates import PromptTemplate, clip

__all__ = ["FewShotLabeller", "FewShotTeacher"]


@dataclass(frozen=True)
class FewShotTeacher:
    """What labels a generation, known before any weights load (the run id depends on it)."""

    task: str
    shots: int
    selection: Selection
    seed: int
    labels: list[str]
    pool: list[tuple[str, str]]
    prompt: PromptRecord
    prompt_hash: str
    llm_version: str
    settings: PromptSettings

    @classmethod
    def read(
        cls,
        task: str,
        shots: int,
        selection: Selection,
        seed: int,
        build_dir: Path,
        settings: PromptSettings,
    ) -> "FewShotTeacher":
        data = TaskData.load(task, build_dir, 0, seed, settings)
        if not 0 <= shots <= len(data.pool):
            raise ValueError(f"--shots must be within 0..{len(data.pool)} (the example pool)")
        with assets.smollm2_gguf().open("rb") as handle:
            llm_version = hashlib.file_digest(handle, "sha256").hexdigest()[:12]
        # The batch job prompts in the plain format, whose hash needs no model loaded.
        prompt_hash = PromptTemplate(data.prompt, data.labels).digest
        return cls(
            task,
            shots,
            selection,
            seed,
            data.labels,
            data.pool,
            data.prompt,
            prompt_hash,
            llm_version,
            settings,
        )

    @property
    def model_name(self) -> str:
        return f"{self.task}-llm-{self.shots}shot"

    @property
    def base_model(self) -> str:
        return LLM_NAME

    @property
    def version(self) -> str:
        identity = [
            self.llm_version,
            self.prompt_hash,
            self.shots,
            self.selection,
            self.seed,
            self.settings.max_chars,
            self.settings.pool_size,
        ]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, str]:
        return {
            "teacher": "llm-fewshot",
            "prompt_hash": self.prompt_hash,
            "shots": str(self.shots),
            "selection": self.selection,
            "seed": str(self.seed),
            "max_chars": str(self.settings.max_chars),
        }

    def labeller(self, batch_size: int, threads: int | None = None) -> "FewShotLabeller":
        """The LLM scores one prompt at a time, so `batch_size` does not apply; `threads`
        overrides the prompt settings' threads."""
        return FewShotLabeller(self, threads)


class FewShotLabeller:
    def __init__(self, teacher: FewShotTeacher, threads: int | None = None) -> None:
        self._teacher = teacher
        settings = teacher.settings
        llm = PromptedLLM.load(settings.cache_dir, settings.threads if threads is None else threads)
        self._classifier = FewShotClassifier(
            llm, load_template(llm, teacher.prompt, teacher.labels, "plain")
        )

    def label(self, texts: Sequence[str]) -> list[Labelled]:
        teacher = self._teacher
        clipped = [clip(text, teacher.settings.max_chars) for text in texts]
        examples = choose_examples(
            teacher.selection, teacher.pool, teacher.shots, clipped, teacher.seed
        )
        answers = self._classifier.classify(clipped, examples)
        return [
            Labelled(answer.label, {k: round(v, 6) for k, v in answer.scores.items()})
            for answer in answers
        ]
