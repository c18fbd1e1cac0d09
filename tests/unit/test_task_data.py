"""A task's labelled data: formats, one-line data errors, deduplication and the split."""

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.pipeline.datasets import (
    DataError,
    Example,
    Splits,
    deduplicate,
    label_counts,
    load_separate,
    load_task,
    split_examples,
    stratified_sample,
)
from services.pipeline.labelled_files import format_of, read_labelled
from services.pipeline.task_file import DataSource, load_task_file

# With the default split (0.7, 0.15, 0.15) a label needs ceil(2 / 0.15) = 14 distinct texts.
PER_LABEL = 14
LABELS = ("spam", "ham", "eggs")
ROWS = [(f"Message {i} about {label}", label) for label in LABELS for i in range(PER_LABEL)]


def write_csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(
    path: Path, rows: list[tuple[str, str]], fields: tuple[str, str] = ("text", "label")
) -> Path:
    lines = [json.dumps({fields[0]: text, fields[1]: label}) for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def write_folders(path: Path, rows: list[tuple[str, str]]) -> Path:
    for number, (text, label) in enumerate(rows):
        folder = path / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number:03d}.txt").write_text(text, encoding="utf-8")
    return path


def source(path: Path, **settings: Any) -> DataSource:
    return DataSource(file=str(path), **settings)


def data_error(source: DataSource, *fragments: str) -> str:
    """The DataError that loading `source` raises: one line holding every fragment."""
    with pytest.raises(DataError) as caught:
        load_task(source)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def pairs(loaded: Any) -> list[tuple[str, str]]:
    return sorted((example.text, loaded.labels[example.label]) for example in loaded.examples)


# --- formats --------------------------------------------------------------------------------


@pytest.fixture
def every_format(tmp_path: Path) -> dict[str, Path]:
    return {
        "csv": write_csv(tmp_path / "data.csv", ROWS),
        "jsonl": write_jsonl(tmp_path / "data.jsonl", ROWS),
        "parquet": write_parquet(
            tmp_path / "data.parquet",
            {"text": [text for text, _ in ROWS], "label": [label for _, label in ROWS]},
        ),
        "folders": write_folders(tmp_path / "folders", ROWS),
    }


def test_every_format_reads_the_same_rows(every_format: dict[str, Path]) -> None:
    expected = sorted(ROWS)
    for data_format, path in every_format.items():
        assert format_of(path, None) == data_format
        rows = read_labelled(path, data_format, "text", "label", "utf-8", "strict")
        assert sorted((row.text, row.label) for row in rows) == expected, data_format
        loaded = load_task(source(path))
        assert loaded.labels == ["eggs", "ham", "spam"]  # inferred, sorted
        assert pairs(loaded) == expected, data_format
        assert (loaded.rows_read, loaded.duplicates_dropped, loaded.conflicts_dropped) == (
            len(ROWS),
            0,
            0,
        )


def test_labels_fix_the_order(every_format: dict[str, Path]) -> None:
    for path in every_format.values():
        loaded = load_task(source(path, labels=["spam", "ham", "eggs"]))
        assert loaded.labels == ["spam", "ham", "eggs"]
        assert pairs(loaded) == sorted(ROWS)
        by_label = Counter(loaded.labels[example.label] for example in loaded.examples)
        assert by_label == dict.fromkeys(LABELS, PER_LABEL)


def test_rows_carry_where_they_were_read(every_format: dict[str, Path]) -> None:
    def first(data_format: str) -> str:
        path = every_format[data_format]
        return read_labelled(path, data_format, "text", "label", "utf-8", "strict")[0].where

    assert first("csv") == f"{every_format['csv']} line 2"  # line 1 is the header
    assert first("jsonl") == f"{every_format['jsonl']} line 1"
    assert first("parquet") == f"{every_format['parquet']} row 1"
    assert first("folders").startswith(str(every_format["folders"] / "eggs"))
    assert first("folders").endswith(".txt")


def test_other_fields_and_numeric_labels(tmp_path: Path) -> None:
    rows = [(f"Text {i} {label}", label) for label in ("0", "1") for i in range(PER_LABEL)]
    path = tmp_path / "data.jsonl"
    path.write_text(
        "".join(json.dumps({"body": text, "stars": int(label)}) + "\n" for text, label in rows),
        encoding="utf-8",
    )
    loaded = load_task(source(path, text_field="body", label_field="stars"))
    assert loaded.labels == ["0", "1"]
    assert pairs(loaded) == sorted(rows)


def test_blank_jsonl_lines_are_skipped_and_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n  \n{"text": "", "label": "x"}\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} line 4: empty text$"):
        read_labelled(path, "jsonl", "text", "label", "utf-8", "strict")


def test_the_format_is_told_by_suffix_or_forced(tmp_path: Path) -> None:
    for suffix, data_format in [
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".CSV", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ]:
        assert format_of(tmp_path / f"data{suffix}", None) == data_format
    assert format_of(tmp_path / "data.txt", "csv") == "csv"
    with pytest.raises(DataError, match=r"data\.txt from its suffix.*set data\.format"):
        format_of(tmp_path / "data.txt", None)
    forced = write_csv(tmp_path / "export.dat", ROWS)
    assert pairs(load_task(source(forced, format="csv"))) == sorted(ROWS)


def test_folders_ignore_hidden_folders_and_other_files(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "folders", ROWS)
    (root / "README.md").write_text("not a label")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.txt").write_text("hidden")
    (root / "spam" / "notes.md").write_text("not a text")
    loaded = load_task(source(root))
    assert loaded.labels == ["eggs", "ham", "spam"]
    assert loaded.rows_read == len(ROWS)


def test_folder_texts_read_with_universal_newlines(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "1.txt").write_bytes(b"one\r\ntwo\rthree\n")
    (root / "b" / "1.txt").write_bytes(b"four")
    rows = read_labelled(root, "folders", "text", "label", "utf-8", "strict")
    assert [(row.text, row.label) for row in rows] == [("one\ntwo\nthree\n", "a"), ("four", "b")]


def test_a_task_file_points_at_its_data(tmp_path: Path) -> None:
    folder = tmp_path / "task"
    folder.mkdir()
    write_csv(folder / "tickets.csv", ROWS, header=("body", "intent"))
    task = folder / "task.yaml"
    task.write_text(
        "name: tickets\n"
        "data: {file: tickets.csv, text_field: body, label_field: intent, "
        "labels: [ham, spam, eggs]}\n",
        encoding="utf-8",
    )
    resolved = load_task_file(task, "quick")
    loaded = load_task(resolved.data)
    assert loaded.labels == ["ham", "spam", "eggs"]
    assert pairs(loaded) == sorted(ROWS)


# --- one-line data errors naming the file and the row ---------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    data_error(source(missing), f"data file {missing} does not exist")
    folder = tmp_path / "no-folder"
    data_error(source(folder, format="folders"), str(folder), "does not exist")


def test_a_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", ROWS, header=("body", "label"))
    data_error(source(path), str(path), "no column 'text'", "(columns: body, label)")
    path = write_csv(tmp_path / "other.csv", ROWS, header=("text", "category"))
    data_error(source(path), str(path), "no column 'label'", "(columns: text, category)")
    parquet = write_parquet(tmp_path / "data.parquet", {"text": ["a"], "topic": ["x"]})
    data_error(source(parquet), str(parquet), "no column 'label'", "(columns: text, topic)")


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    good = "".join(f"{text},{label}\n" for text, label in ROWS)
    path.write_bytes(b"text,label\nCaf\xc3\xa9 ok,spam\nbad \xff byte,ham\n" + good.encode())
    data_error(source(path), f"{path} line 3 is not valid utf-8", "0xff", "encoding_errors")
    loaded = load_task(source(path, encoding_errors="replace"))
    texts = {example.text for example in loaded.examples}
    assert "bad \ufffd byte" in texts
    assert "Café ok" in texts
    latin = load_task(source(path, encoding="latin-1"))
    assert "bad ÿ byte" in {example.text for example in latin.examples}


def test_non_utf8_bytes_in_a_folder_text_name_the_file(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "folders", ROWS)
    bad = root / "ham" / "bad.txt"
    bad.write_bytes(b"first line\nsecond \xfe line\n")
    data_error(source(root), f"{bad} line 2 is not valid utf-8")
    loaded = load_task(source(root, encoding_errors="replace"))
    assert "first line\nsecond \ufffd line" in {example.text for example in loaded.examples}


def test_an_empty_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", [*ROWS[:3], ("   ", "spam"), *ROWS[3:]])
    data_error(source(path), f"{path} line 5: empty text")
    jsonl = write_jsonl(tmp_path / "data.jsonl", [ROWS[0], ("", "spam")])
    data_error(source(jsonl), f"{jsonl} line 2: empty text")
    parquet = write_parquet(
        tmp_path / "data.parquet", {"text": ["a", "b", "\t"], "label": ["x", "y", "x"]}
    )
    data_error(source(parquet), f"{parquet} row 3: empty text")
    root = write_folders(tmp_path / "folders", ROWS)
    blank = root / "spam" / "blank.txt"
    blank.write_text("\n  \n")
    data_error(source(root), f"{blank}: empty text")


def test_a_row_without_a_label(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", [ROWS[0], ("no label here", "")])
    data_error(source(path), f"{path} line 3: no label")
    parquet = write_parquet(tmp_path / "data.parquet", {"text": ["a", "b"], "label": ["x", None]})
    data_error(source(parquet), f"{parquet} row 2: no label")


def test_a_label_outside_the_labels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [*ROWS, ("What is this?", "bacon")])
    data_error(
        source(path, labels=list(LABELS)),
        f"{path} line {len(ROWS) + 1}: label 'bacon' is not one of the task's labels",
        "(spam, ham, eggs)",
    )


def test_fewer_than_two_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", [(f"Text {i}", "spam") for i in range(20)])
    data_error(source(path), "only 'spam'", "at least two labels")


def test_fewer_than_two_labels_after_conflicts(tmp_path: Path) -> None:
    rows = [(f"Text {i}", "spam") for i in range(20)] + [("Text 1", "ham")]
    path = write_csv(tmp_path / "data.csv", rows)
    data_error(source(path), "fewer than two labels")


def test_a_label_too_rare_to_stratify(tmp_path: Path) -> None:
    rows = [*ROWS, *[(f"Rare {i}", "bacon") for i in range(6)]]
    path = write_csv(tmp_path / "data.csv", rows)
    data_error(source(path), "too rare to stratify", "'bacon' has 6", "at least 14")
    # Larger validation and test shares need fewer texts per label: ceil(2 / 0.4) = 5.
    rare = source(path, split=(0.2, 0.4, 0.4))
    loaded = load_task(rare)
    assert "bacon" in loaded.labels
    counts = label_counts(split_examples(loaded.examples, 0, rare.split), loaded.labels)
    assert counts["validation"]["bacon"] >= 2
    assert counts["test"]["bacon"] >= 2


def test_rarity_counts_distinct_texts(tmp_path: Path) -> None:
    rows = [*ROWS, *[("The same rare text", "bacon")] * 20]
    path = write_csv(tmp_path / "data.csv", rows)
    data_error(source(path), "'bacon' has 1")


def test_an_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", \n', encoding="utf-8")
    data_error(source(path), f"{path} line 2: not valid JSON")
    path.write_text('{"text": "ok", "label": "a"}\n["a", "list"]\n', encoding="utf-8")
    data_error(source(path), f"{path} line 2: not a JSON object")


def test_a_json_line_without_the_label_field(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "no label"}\n', encoding="utf-8")
    data_error(source(path), f"{path} line 2: no 'label' field")
    path.write_text('{"body": "no text", "label": "a"}\n', encoding="utf-8")
    data_error(source(path), f"{path} line 1: no 'text' field")


def test_a_json_text_that_is_not_a_string(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": 42, "label": "a"}\n', encoding="utf-8")
    data_error(source(path), f"{path} line 1: 'text' is not a text")
    path.write_text('{"text": "ok", "label": [1]}\n', encoding="utf-8")
    data_error(source(path), f"{path} line 1: label [1] is not a name or a number")


def test_a_parquet_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text("text,label\nhello,spam\n", encoding="utf-8")
    data_error(source(path), f"{path} is not a readable Parquet file")


def test_a_folder_given_as_a_file(tmp_path: Path) -> None:
    root = write_folders(tmp_path / "folders", ROWS)
    data_error(source(root, format="csv"), str(root), "is a folder", "data.format: folders")


# --- duplicates and conflicts ---------------------------------------------------------------


def test_duplicates_after_normalisation_are_counted_and_dropped(tmp_path: Path) -> None:
    rows = [
        *ROWS,
        ("  MESSAGE 0 about   spam ", "spam"),  # a duplicate of ROWS[0]
        ("message 0 ABOUT spam", "spam"),  # another one
        ("Message 1 about ham", "ham"),  # an exact duplicate
    ]
    path = write_csv(tmp_path / "data.csv", rows)
    loaded = load_task(source(path))
    assert loaded.rows_read == len(rows)
    assert loaded.duplicates_dropped == 3
    assert loaded.conflicts_dropped == 0
    assert pairs(loaded) == sorted(ROWS)  # the first spelling is kept


def test_texts_seen_with_two_labels_are_counted_and_dropped(tmp_path: Path) -> None:
    rows = [
        *ROWS,
        *[(f"One more {label}", label) for label in LABELS],
        ("Which one am I?", "spam"),
        ("which one  am i?", "ham"),  # the same text, another label
        ("Message 0 about spam", "eggs"),  # conflicts with ROWS[0]
    ]
    path = write_csv(tmp_path / "data.csv", rows)
    loaded = load_task(source(path))
    texts = {example.text for example in loaded.examples}
    assert "Which one am I?" not in texts
    assert "Message 0 about spam" not in texts
    assert loaded.conflicts_dropped == 2
    assert loaded.duplicates_dropped == 2  # each conflict's second row is a repeat too
    assert len(loaded.examples) == len(ROWS) + len(LABELS) - 1
    assert loaded.rows_read == len(loaded.examples) + loaded.duplicates_dropped + 2


def test_deduplicate_keeps_the_first_stripped_text() -> None:
    loaded = deduplicate(
        ["a", "b"],
        [("  Hello  World ", "a"), ("hello world", "a"), ("x", "a"), ("X", "b"), ("y", "b")],
    )
    assert loaded.examples == [Example("Hello  World", 0), Example("y", 1)]
    assert (loaded.rows_read, loaded.duplicates_dropped, loaded.conflicts_dropped) == (5, 2, 1)


# --- separate train, validation and test files ----------------------------------------------


def separate(
    tmp_path: Path, train: list[Any], validation: list[Any], test: list[Any], **kw: Any
) -> DataSource:
    paths = [
        write_csv(tmp_path / f"{name}.csv", rows)
        for name, rows in (("train", train), ("validation", validation), ("test", test))
    ]
    return DataSource(train=str(paths[0]), validation=str(paths[1]), test=str(paths[2]), **kw)


def test_separate_files_give_their_own_splits(tmp_path: Path) -> None:
    train = [("Buy now", "spam"), ("Hi mum", "ham"), ("Win cash", "spam"), ("Lunch?", "ham")]
    validation = [("Free prize", "spam"), ("See you", "ham")]
    test = [("Cheap pills", "spam"), ("Call me", "ham")]
    loaded, splits = load_separate(separate(tmp_path, train, validation, test))
    assert loaded.labels == ["ham", "spam"]

    def texts(examples: list[Example]) -> list[str]:
        return [example.text for example in examples]

    assert texts(splits.train) == [text for text, _ in train]
    assert texts(splits.validation) == [text for text, _ in validation]
    assert texts(splits.test) == [text for text, _ in test]
    assert splits.sizes() == {"train": 4, "validation": 2, "test": 2}


def test_a_text_in_two_files_is_kept_once_in_the_first(tmp_path: Path) -> None:
    train = [("Buy now", "spam"), ("Hi mum", "ham")]
    validation = [("Free prize", "spam"), ("  hi MUM ", "ham"), ("See you", "ham")]
    test = [("Cheap pills", "spam"), ("Call me", "ham"), ("buy now", "spam")]
    loaded, splits = load_separate(separate(tmp_path, train, validation, test))
    assert [example.text for example in splits.train] == ["Buy now", "Hi mum"]
    assert [example.text for example in splits.validation] == ["Free prize", "See you"]
    assert [example.text for example in splits.test] == ["Cheap pills", "Call me"]
    assert loaded.duplicates_dropped == 2
    assert loaded.rows_read == 8


def test_a_label_missing_from_train_is_an_error(tmp_path: Path) -> None:
    train = [("Buy now", "spam"), ("Win cash", "spam")]
    validation = [("Free prize", "spam"), ("See you", "ham")]
    test = [("Cheap pills", "spam"), ("Call me", "ham")]
    with pytest.raises(DataError, match=r"^labels never seen in the train file .*train\.csv: ham$"):
        load_separate(separate(tmp_path, train, validation, test))


def test_a_fixed_label_in_no_file_is_missing_from_train(tmp_path: Path) -> None:
    rows = [("Buy now", "spam"), ("Hi mum", "ham")]
    given = separate(
        tmp_path, rows, [("a", "spam")], [("b", "ham")], labels=["ham", "spam", "eggs"]
    )
    with pytest.raises(DataError, match=r"never seen in the train file .*: eggs$"):
        load_separate(given)


def test_a_separate_file_left_empty_by_deduplication(tmp_path: Path) -> None:
    train = [("Buy now", "spam"), ("Hi mum", "ham")]
    given = separate(tmp_path, train, [("buy NOW", "spam")], [("Call me", "ham")])
    with pytest.raises(DataError) as caught:
        load_separate(given)
    message = str(caught.value)
    assert "validation file" in message
    assert str(tmp_path / "validation.csv") in message
    assert "no usable text" in message


def test_a_bad_row_in_a_separate_file_names_that_file(tmp_path: Path) -> None:
    given = separate(
        tmp_path, [("Buy now", "spam")], [("ok", "ham")], [("ok 2", "ham"), ("", "spam")]
    )
    where = re.escape(str(tmp_path / "test.csv"))
    with pytest.raises(DataError, match=rf"^{where} line 3: empty text$"):
        load_separate(given)


# --- split_examples, stratified_sample, label_counts ----------------------------------------

EXAMPLES = [Example(f"text {i}", i % 3) for i in range(60)]


def test_the_same_seed_gives_the_same_split() -> None:
    first = split_examples(EXAMPLES, seed=7)
    assert split_examples(EXAMPLES, seed=7) == first
    assert split_examples(EXAMPLES, seed=8) != first
    assert first.sizes() == {"train": 42, "validation": 9, "test": 9}
    together = first.train + first.validation + first.test
    assert sorted(together, key=lambda example: example.text) == sorted(
        EXAMPLES, key=lambda example: example.text
    )


def test_the_split_is_stratified_and_follows_the_fractions() -> None:
    splits = split_examples(EXAMPLES, seed=1, fractions=(0.5, 0.25, 0.25))
    assert splits.sizes() == {"train": 30, "validation": 15, "test": 15}
    counts = label_counts(splits, ["a", "b", "c"])
    assert counts == {
        "train": {"a": 10, "b": 10, "c": 10},
        "validation": {"a": 5, "b": 5, "c": 5},
        "test": {"a": 5, "b": 5, "c": 5},
    }


def test_label_counts_counts_per_split() -> None:
    splits = Splits(
        train=[Example("a", 0), Example("b", 0), Example("c", 1)],
        validation=[Example("d", 1)],
        test=[],
    )
    assert label_counts(splits, ["x", "y", "z"]) == {
        "train": {"x": 2, "y": 1, "z": 0},
        "validation": {"x": 0, "y": 1, "z": 0},
        "test": {"x": 0, "y": 0, "z": 0},
    }


def test_a_loaded_task_splits_with_every_label_in_every_split(tmp_path: Path) -> None:
    loaded = load_task(source(write_csv(tmp_path / "data.csv", ROWS)))
    counts = label_counts(split_examples(loaded.examples, seed=0), loaded.labels)
    for split, per_label in counts.items():
        assert min(per_label.values()) >= 2, split
    assert sum(sum(per_label.values()) for per_label in counts.values()) == len(ROWS)


def test_stratified_sample() -> None:
    assert stratified_sample(EXAMPLES, 100, seed=0) == EXAMPLES
    sample = stratified_sample(EXAMPLES, 30, seed=3)
    assert len(sample) == 30
    assert Counter(example.label for example in sample) == {0: 10, 1: 10, 2: 10}
    assert stratified_sample(EXAMPLES, 30, seed=3) == sample
    assert set(sample) <= set(EXAMPLES)
    # Too few of a label to stratify: a plain seeded draw of the asked size.
    lopsided = [*EXAMPLES[:10], Example("alone", 5)]
    assert len(stratified_sample(lopsided, 4, seed=0)) == 4
