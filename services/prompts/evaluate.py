"""`switchyard prompts eval`: accuracy and macro-F1 of the prompted LLM per shot count, on a
fixed sample of a task's test split, beside the distilled student on the same sample.

The split is the model build's own (`work/<task>/data/test.jsonl`), so the sample holds no
text the student trained on; shots come from its training split when the task file allows.
The LLM sees each text clipped to `max_chars`; the student sees the whole text, truncated by
its own tokenizer as in serving.
"""

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts.build_layout import BuildLayout
from services.contracts.build_report import PromptRecord
from services.contracts.model_repository import latest_version
from services.pipeline.datasets import Example, load_splits, stratified_sample
from services.pipeline.evaluate import classification_metrics
from services.prompts.classifier import FewShotClassifier
from services.prompts.errors import PromptError
from services.prompts.llm import LLM_NAME, PromptedLLM
from services.prompts.selection import Selection, choose_examples
from services.prompts.templates import PromptFormat, PromptTemplate, clip

__all__ = ["PromptEvalOptions", "PromptSettings", "TaskData", "evaluate_prompts", "load_template"]


class PromptSettings(BaseSettings):
    """Where the converted LLM is kept and how prompts are cut; SWITCHYARD_PROMPTS_* sets them."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_PROMPTS_", frozen=True)

    cache_dir: Path = Path("build/llm")
    max_chars: int = Field(300, gt=0, description="each text is clipped to this many characters")
    pool_size: int = Field(500, gt=0, description="training examples to draw shots from")
    # One thread: on a small shared machine torch's default (every core) runs ~10x slower.
    threads: int | None = Field(1, gt=0)


@dataclass(frozen=True)
class PromptEvalOptions:
    task: str
    shots: list[int]
    n: int = 40
    seed: int = 0
    selection: Selection = "random"
    prompt_format: PromptFormat = "plain"
    build_dir: Path = Path("build")


@dataclass(frozen=True)
class TaskData:
    labels: list[str]
    prompt: PromptRecord
    test: list[Example]
    pool: list[tuple[str, str]]

    @classmethod
    def load(
        cls, task: str, build_dir: Path, n: int, seed: int, settings: PromptSettings
    ) -> "TaskData":
        """A task of the build: its labels, prompt, a test sample and the example pool."""
        layout = BuildLayout(build_dir)
        try:
            report = layout.read_report()
        except ValueError as exc:
            raise PromptError(str(exc)) from None
        if report is None or task not in report.tasks:
            known = ", ".join(sorted(report.tasks)) if report else "none"
            raise PromptError(
                f"task {task!r} is not in the build at {build_dir} (tasks: {known}); "
                "build it with `switchyard models build`"
            )
        built = report.tasks[task]
        try:
            splits = load_splits(layout.stage_dir(task, "data"))
        except (OSError, ValueError, TypeError):
            raise PromptError(
                f"the data splits of {task!r} in {build_dir} are missing or unreadable; "
                "rebuild the task"
            ) from None
        labels = built.labels
        pool = _sample(splits.train, settings.pool_size, seed, len(labels))
        return cls(
            labels=labels,
            prompt=built.prompt,
            test=_sample(splits.test, n, seed, len(labels)),
            pool=[(clip(e.text, settings.max_chars), labels[e.label]) for e in pool]
            if built.prompt.few_shot_pool
            else [],
        )


def _sample(examples: list[Example], n: int, seed: int, classes: int) -> list[Example]:
    """`n` examples with the split's label mix; fewer than one per label: a plain draw."""
    if n >= classes:
        return stratified_sample(examples, n, seed)
    return random.Random(seed).sample(examples, min(n, len(examples)))


def load_template(
    llm: PromptedLLM, prompt: PromptRecord, labels: list[str], prompt_format: PromptFormat
) -> PromptTemplate:
    def chat(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return str(
            llm.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    return PromptTemplate(
        prompt,
        labels,
        prompt_format,
        chat=chat if llm.has_chat_template else None,
        chat_template=str(llm.tokenizer.chat_template or ""),
    )


def evaluate_prompts(
    options: PromptEvalOptions, settings: PromptSettings, say: Callable[[str], None]
) -> dict[str, Any]:
    if not options.shots or min(options.shots) < 0:
        raise PromptError(f"--shots must be counts of 0 or more, got {options.shots}")
    if options.n <= 0:
        raise PromptError(f"--n must be positive, got {options.n}")
    data = TaskData.load(options.task, options.build_dir, options.n, options.seed, settings)
    if max(options.shots) > len(data.pool):
        raise PromptError(
            f"{max(options.shots)} shots asked for, but the example pool holds only "
            f"{len(data.pool)} examples (SWITCHYARD_PROMPTS_POOL_SIZE; none when the task "
            "file sets prompts.few_shot_pool: false)"
        )
    llm = PromptedLLM.load(settings.cache_dir, settings.threads)
    template = load_template(llm, data.prompt, data.labels, options.prompt_format)
    classifier = FewShotClassifier(llm, template)
    texts = [clip(example.text, settings.max_chars) for example in data.test]
    truth = [example.label for example in data.test]
    rows = []
    for shots in options.shots:
        say(f"{options.task}: {shots}-shot on {len(texts)} texts ...")
        examples = choose_examples(options.selection, data.pool, shots, texts, options.seed)
        started = time.perf_counter()
        answers = classifier.classify(texts, examples, show_progress=True)
        seconds = time.perf_counter() - started
        predicted = [data.labels.index(answer.label) for answer in answers]
        tokens = [answer.prompt_tokens for answer in answers]
        rows.append(
            {
                "model": f"{LLM_NAME}, {shots}-shot",
                "shots": shots,
                **classification_metrics(truth, predicted),
                "prompt_tokens_mean": statistics.mean(tokens),
                "prompt_tokens_max": max(tokens),
                "seconds_per_prediction": seconds / len(texts),
            }
        )
    student = _student_row(options.build_dir, options.task, data)
    return {
        "task": options.task,
        "n": len(texts),
        "seed": options.seed,
        "selection": options.selection,
        "format": options.prompt_format,
        "max_chars": settings.max_chars,
        "llm": LLM_NAME,
        "llm_version": llm.version,
        "template_hash": template.digest,
        "rows": rows + ([student] if student else []),
    }


def _student_row(build_dir: Path, task: str, data: TaskData) -> dict[str, Any] | None:
    """The build's distilled student (ONNX, in-process) on the same texts; None without one."""
    from services.pipeline.onnx_classifier import OnnxTextClassifier

    try:
        files = latest_version(BuildLayout(build_dir).model_repository, task)
    except FileNotFoundError:
        return None
    student = OnnxTextClassifier.of_version(files)
    labels = files.labels()
    predicted, durations = [], []
    for example in data.test:
        started = time.perf_counter()
        logits = student.logits([example.text])
        durations.append(time.perf_counter() - started)
        predicted.append(data.labels.index(labels[int(logits[0].argmax())]))
    return {
        "model": f"distilled student ({task} v{files.version}, ONNX)",
        "shots": None,
        **classification_metrics([e.label for e in data.test], predicted),
        "prompt_tokens_mean": None,
        "prompt_tokens_max": None,
        "seconds_per_prediction": statistics.mean(durations),
    }
