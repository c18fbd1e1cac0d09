"""Reading the batch job's inputs: formats, bad rows counted, normalisation and deduplication."""

from pathlib import Path

import pytest

from services.batch.errors import BatchError
from services.batch.inputs import TextSet, format_of, read_file
from services.batch.job import Shard
from services.contracts.cache_schema import text_hash


def read(path: Path, file_format: str, text_field: str = "text") -> TextSet:
    texts = TextSet(max_chars=50)
    read_file(path, format_of(path, None), text_field, texts)
    assert format_of(path, None) == file_format
    return texts


def test_jsonl_counts_every_bad_row_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_bytes(
        b'{"text": "Good morning"}\n'
        b"\n"
        b"{broken json\n"
        b'["a list"]\n'
        b'{"body": "no text field"}\n'
        b'{"text": 42}\n'
        b'{"text": "   "}\n'
        b'{"text": "' + b"x" * 51 + b'"}\n'
        b'{"text": "caf\xc3\xa9 \xff\xfe"}\n'
        b'{"text": "  GOOD   morning "}\n'
        b'{"text": "Second text"}\n'
    )
    texts = read(path, "jsonl")
    assert texts.rows_read == 10  # the blank line is not a row
    assert dict(texts.skipped) == {
        "invalid JSON": 1,
        "no 'text' field": 2,
        "text is not a string": 1,
        "empty text": 1,
        "longer than 50 characters": 1,
        "not UTF-8": 1,
    }
    assert texts.duplicates == 1
    assert texts.texts == {
        text_hash("Good morning"): "good morning",
        text_hash("second text"): "second text",
    }


def test_csv_reads_the_named_column_with_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "queries.csv"
    path.write_text('id,query\n1,"first, with comma"\n2,"two\nlines"\n3\n', encoding="utf-8")
    texts = read(path, "csv", text_field="query")
    assert sorted(texts.texts.values()) == ["first, with comma", "two lines"]
    assert dict(texts.skipped) == {"no 'query' value": 1}
    with pytest.raises(BatchError, match=r"has no column 'text' \(columns: id, query\)"):
        read(path, "csv")


def test_plain_text_is_one_text_per_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_text("one\n\n  two  \nONE\n", encoding="utf-8")
    texts = read(path, "text")
    assert sorted(texts.texts.values()) == ["one", "two"]
    assert (texts.rows_read, texts.duplicates) == (3, 1)


def test_unreadable_files_are_errors(tmp_path: Path) -> None:
    binary = tmp_path / "queries.jsonl"
    binary.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")
    with pytest.raises(BatchError, match="is a binary file"):
        read(binary, "jsonl")
    with pytest.raises(BatchError, match="does not exist"):
        read(tmp_path / "absent.txt", "text")
    with pytest.raises(BatchError, match="cannot tell the format"):
        format_of(tmp_path / "queries.parquet", None)
    assert format_of(tmp_path / "queries.parquet", "csv") == "csv"


def test_shards_partition_the_texts() -> None:
    digests = [text_hash(f"text {i}") for i in range(300)]
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    owners = [[shard.owns(d) for shard in shards] for d in digests]
    assert all(sum(owned) == 1 for owned in owners)
    assert all(sum(owned[i] for owned in owners) > 60 for i in range(3))
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(BatchError, match="--shard must be i/n"):
            Shard.parse(bad)
