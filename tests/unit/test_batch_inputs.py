"""Reading the batch job's inputs: formats, bad rows counted, normalisation and deduplication."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.batch.errors import BatchError
from services.batch.inputs import TextSet, format_of, parse_format, read_file
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
        format_of(tmp_path / "queries.xlsx", None)
    assert format_of(tmp_path / "queries.xlsx", "csv") == "csv"


def test_parquet_reads_the_text_column_batch_by_batch(tmp_path: Path) -> None:
    path = tmp_path / "queries.parquet"
    table = pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "text": ["Good morning", None, "  GOOD   morning ", "x" * 51, "   ", "Second text"],
        }
    )
    pq.write_table(table, path, row_group_size=2)  # three row groups, so several batches
    assert b"\0" in path.read_bytes()  # binary, yet not refused as "a binary file"
    texts = read(path, "parquet")
    assert texts.rows_read == 6
    assert dict(texts.skipped) == {
        "no 'text' value": 1,
        "longer than 50 characters": 1,
        "empty text": 1,
    }
    assert texts.duplicates == 1
    assert texts.texts == {
        text_hash("Good morning"): "good morning",
        text_hash("Second text"): "second text",
    }
    numbers = read(path, "parquet", text_field="id")
    assert (numbers.rows_read, dict(numbers.skipped)) == (6, {"text is not a string": 6})
    assert numbers.texts == {}


def test_parquet_is_chosen_by_suffix_or_format(tmp_path: Path) -> None:
    assert format_of(tmp_path / "queries.parquet", None) == "parquet"
    assert format_of(tmp_path / "QUERIES.PQ", None) == "parquet"
    assert parse_format("parquet") == "parquet"
    path = tmp_path / "queries.pq"
    pq.write_table(pa.table({"query": ["one", "two"]}), path)
    assert sorted(read(path, "parquet", text_field="query").texts.values()) == ["one", "two"]
    # Under another suffix, --format parquet reads it; read as text it is a binary file.
    renamed = path.rename(tmp_path / "queries.bin")
    texts = TextSet(max_chars=50)
    read_file(renamed, format_of(renamed, "parquet"), "query", texts)
    assert sorted(texts.texts.values()) == ["one", "two"]
    with pytest.raises(BatchError, match="is a binary file, not text text"):
        read_file(renamed, "text", "query", TextSet(max_chars=50))


def test_parquet_without_the_column_names_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["hello"]}), path)
    with pytest.raises(
        BatchError,
        match=r"queries\.parquet has no column 'text' \(columns: id, body\); pass --text-field",
    ):
        read(path, "parquet")


def test_unreadable_parquet_files_are_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [f"text {i}" for i in range(100)]}), good)
    corrupt = {
        "not.parquet": b'{"text": "a JSON line, not Parquet"}\n',
        "short.parquet": b"PAR1",
        "empty.parquet": b"",
        "truncated.parquet": good.read_bytes()[:-20],
    }
    for name, content in corrupt.items():
        path = tmp_path / name
        path.write_bytes(content)
        texts = TextSet(max_chars=50)
        with pytest.raises(BatchError, match=f"cannot read {path} as Parquet: ") as error:
            read_file(path, format_of(path, None), "text", texts)
        assert len(str(error.value).splitlines()) == 1
        assert texts.rows_read == 0
    with pytest.raises(BatchError, match="does not exist"):
        read(tmp_path / "absent.parquet", "parquet")
    (tmp_path / "folder.pq").mkdir()
    with pytest.raises(BatchError, match="is a folder, not a file"):
        read(tmp_path / "folder.pq", "parquet")


def test_importing_the_inputs_does_not_load_pyarrow() -> None:
    code = "import sys, services.batch.inputs; print('pyarrow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_shards_partition_the_texts() -> None:
    digests = [text_hash(f"text {i}") for i in range(300)]
    shards = [Shard.parse(f"{i}/3") for i in range(3)]
    owners = [[shard.owns(d) for shard in shards] for d in digests]
    assert all(sum(owned) == 1 for owned in owners)
    assert all(sum(owned[i] for owned in owners) > 60 for i in range(3))
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(BatchError, match="--shard must be i/n"):
            Shard.parse(bad)
