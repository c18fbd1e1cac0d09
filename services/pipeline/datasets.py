"""A task's examples: its labelled files read and checked, deduplicated, and split by seed.

Texts are compared by their normalised form (the router's cache key), so a text that appears
twice is kept once and a text seen with two labels is dropped (both counted).
"""

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

from services.contracts.build_layout import SPLITS
from services.contracts.text import normalize_text
from services.pipeline.labelled_files import DataError, LabelledRow, format_of, read_labelled
from services.pipeline.task_file import DataSource, resolve_data_path

__all__ = [
    "DataError",
    "Example",
    "LoadedTask",
    "Splits",
    "deduplicate",
    "label_counts",
    "load_separate",
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


def _source_path(value: str) -> Path:
    path = resolve_data_path(value)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    return path


def _read_source(source: DataSource, value: str) -> list[LabelledRow]:
    path = _source_path(value)
    return read_labelled(
        path,
        format_of(path, source.format),
        source.text_field,
        source.label_field,
        source.encoding,
        source.encoding_errors,
    )


def _named(source: DataSource) -> str:
    return " and ".join(str(resolve_data_path(path)) for path in source.files().values())


def _labels(source: DataSource, rows: Sequence[LabelledRow]) -> list[str]:
    """The label order: the task file's, checked against every row, or the sorted names."""
    if source.labels is not None:
        allowed = set(source.labels)
        for row in rows:
            if row.label not in allowed:
                raise DataError(
                    f"{row.where}: label {row.label!r} is not one of the task's labels "
                    f"({', '.join(source.labels)})"
                )
        return list(source.labels)
    labels = sorted({row.label for row in rows})
    if len(labels) < 2:
        found = f"only {labels[0]!r}" if labels else "no label"
        raise DataError(f"{_named(source)} has {found}; a classifier needs at least two labels")
    return labels


def _check_stratifiable(task: LoadedTask, source: DataSource) -> None:
    """Each label needs enough examples for validation and test to hold two of it each."""
    smallest_share = min(source.split[1], source.split[2])
    needed = max(2, math.ceil(2 / smallest_share))
    counts = Counter(task.labels[example.label] for example in task.examples)
    rare = [(label, counts[label]) for label in task.labels if counts[label] < needed]
    if rare:
        shown = ", ".join(f"{label!r} has {count}" for label, count in rare)
        raise DataError(
            f"labels too rare to stratify: {shown}; with split {list(source.split)} each label "
            f"needs at least {needed} distinct texts"
        )


def load_task(source: DataSource) -> LoadedTask:
    """The deduplicated examples of one labelled file; DataError names the bad file and row."""
    assert source.file is not None
    rows = _read_source(source, source.file)
    labels = _labels(source, rows)
    loaded = deduplicate(labels, [(row.text, row.label) for row in rows])
    if len({example.label for example in loaded.examples}) < 2:
        raise DataError(
            f"{_named(source)}: after dropping texts seen with two labels, fewer than two "
            "labels are left"
        )
    _check_stratifiable(loaded, source)
    return loaded


def load_separate(source: DataSource) -> tuple[LoadedTask, Splits]:
    """Train, validation and test files as given; a text in two files keeps the first."""
    per_split = {split: _read_source(source, value) for split, value in source.files().items()}
    every_row = [row for rows in per_split.values() for row in rows]
    labels = _labels(source, every_row)
    loaded = deduplicate(labels, [(row.text, row.label) for row in every_row])
    split_of: dict[str, str] = {}
    for split, rows in per_split.items():
        for row in rows:
            split_of.setdefault(normalize_text(row.text), split)
    assigned: dict[str, list[Example]] = {split: [] for split in SPLITS}
    for example in loaded.examples:
        assigned[split_of[normalize_text(example.text)]].append(example)
    for split, examples in assigned.items():
        if not examples:
            raise DataError(f"the {split} file {source.files()[split]} has no usable text")
    trained = {example.label for example in assigned["train"]}
    missing = [label for index, label in enumerate(labels) if index not in trained]
    if missing:
        raise DataError(
            f"labels never seen in the train file {source.files()['train']}: {', '.join(missing)}"
        )
    return loaded, Splits(**assigned)


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
    counts = Counter(example.label for example in examples)
    if min(counts.values()) < 2 or limit < len(counts):
        # Too few of a label to stratify (a small separate file): a plain seeded draw.
        sample, _ = train_test_split(examples, train_size=limit, random_state=seed)
        return list(sample)
    sample, _ = train_test_split(
        examples,
        train_size=limit,
        stratify=[example.label for example in examples],
        random_state=seed,
    )
    return list(sample)


def label_counts(splits: Splits, labels: list[str]) -> dict[str, dict[str, int]]:
    """How many examples of each label every split holds."""
    return {
        name: {
            label: sum(example.label == index for example in getattr(splits, name))
            for index, label in enumerate(labels)
        }
        for name in SPLITS
    }


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
