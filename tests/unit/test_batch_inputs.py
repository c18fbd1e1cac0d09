"""Reading the batch job's inputs: formats, bad rows counted, normalisation and deduplication."""

import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.batch.errors import BatchError
from services.batch.input_plan import list_inputs, shard_pieces
from services.batch.inputs import InputFormat, TextSet, format_of, parse_format, read_piece
from services.batch.settings import Shard
from services.contracts.cache_schema import text_hash


def read_file(path: Path, forced: InputFormat | None, text_field: str, into: TextSet) -> None:
    """Every piece of the one file `path`, as an unsharded run reads it."""
    for piece in shard_pieces(list_inputs([str(path)], forced), 0, 1, text_field):
        read_piece(piece, text_field, into)


def read(path: Path, file_format: str, text_field: str = "text") -> TextSet:
    texts = TextSet(max_chars=50)
    read_file(path, None, text_field, texts)
    assert format_of(path.name, None) == file_format
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
        format_of(str(tmp_path / "queries.xlsx"), None)
    assert format_of(str(tmp_path / "queries.xlsx"), "csv") == "csv"


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
    assert format_of("queries.parquet", None) == "parquet"
    assert format_of("s3://bucket/QUERIES.PQ", None) == "parquet"
    assert format_of("folder.d/queries", "text") == "text"
    with pytest.raises(BatchError, match="cannot tell the format"):
        format_of("folder.jsonl/queries", None)
    assert parse_format("parquet") == "parquet"
    path = tmp_path / "queries.pq"
    pq.write_table(pa.table({"query": ["one", "two"]}), path)
    assert sorted(read(path, "parquet", text_field="query").texts.values()) == ["one", "two"]
    # Under another suffix, --format parquet reads it; read as text it is a binary file.
    renamed = path.rename(tmp_path / "queries.bin")
    texts = TextSet(max_chars=50)
    read_file(renamed, "parquet", "query", texts)
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
            read_file(path, None, "text", texts)
        assert len(str(error.value).splitlines()) == 1
        assert texts.rows_read == 0
    with pytest.raises(BatchError, match="does not exist"):
        read(tmp_path / "absent.parquet", "parquet")
    (tmp_path / "folder.pq").mkdir()
    with pytest.raises(BatchError, match=r"input folder .*folder\.pq holds no JSONL, CSV"):
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


def shard_reads(paths: list[Path], count: int) -> list[TextSet]:
    files = list_inputs([str(path) for path in paths], None)
    shards = []
    for index in range(count):
        texts = TextSet(max_chars=50)
        for piece in shard_pieces(files, index, count, "text"):
            read_piece(piece, "text", texts)
        shards.append(texts)
    return shards


def test_shards_read_disjoint_byte_ranges_whose_union_is_the_input(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    # Lines of varied length, so that shard bounds fall inside lines and right after them.
    jsonl.write_text(
        "".join(f'{{"text": "text {i} {"x" * (i % 7)}"}}\n' for i in range(300)), encoding="utf-8"
    )
    text = tmp_path / "b.txt"
    text.write_text("".join(f"line {i}\n" for i in range(200)), encoding="utf-8")
    (whole,) = shard_reads([jsonl, text], 1)
    assert (whole.rows_read, len(whole.texts)) == (500, 500)
    total_bytes = jsonl.stat().st_size + text.stat().st_size
    assert whole.bytes_read == total_bytes
    for count in (2, 3, 5, 8):
        shards = shard_reads([jsonl, text], count)
        assert sum(shard.rows_read for shard in shards) == 500
        assert sum(shard.bytes_read for shard in shards) == total_bytes
        merged = {d: t for shard in shards for d, t in shard.texts.items()}
        assert merged == whole.texts
        assert sum(len(shard.texts) for shard in shards) == 500  # no row read twice
        # Each shard reads its n-th of the bytes, give or take the line it ends inside.
        assert all(shard.bytes_read <= total_bytes / count + 40 for shard in shards)


def test_csv_files_and_parquet_row_groups_go_whole_to_one_shard(tmp_path: Path) -> None:
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(400)]}), parquet, row_group_size=50)
    csvs = []
    for n in range(4):
        path = tmp_path / f"part-{n}.csv"
        path.write_text("text\n" + "".join(f'"csv {n} {i}\nsecond line"\n' for i in range(30)))
        csvs.append(path)
    (whole,) = shard_reads([parquet, *csvs], 1)
    assert len(whole.texts) == 400 + 4 * 30
    shards = shard_reads([parquet, *csvs], 3)
    assert sum(len(shard.texts) for shard in shards) == len(whole.texts)
    assert {d for shard in shards for d in shard.texts} == set(whole.texts)
    assert all(0 < shard.rows_read < whole.rows_read for shard in shards)
    # A CSV row with a quoted newline is never cut: every text of every file is whole.
    assert sum("second line" in t for shard in shards for t in shard.texts.values()) == 120


def test_a_shard_with_an_empty_share_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"text": "only one"}\n')
    shards = shard_reads([path], 40)
    assert [len(shard.texts) for shard in shards].count(1) == 1
    assert sum(shard.rows_read for shard in shards) == 1


def test_folders_globs_and_fsspec_urls_list_their_files(tmp_path: Path) -> None:
    folder = tmp_path / "queries"
    (folder / "day=1").mkdir(parents=True)
    (folder / "day=1" / "part-0.jsonl").write_text('{"text": "one"}\n')
    (folder / "b.txt").write_text("two\n")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.jsonl.crc").write_text("checksum")
    (folder / "notes.md").write_text("not an input format")
    listed = list_inputs([str(folder)], None)
    assert [Path(f.url).relative_to(folder).as_posix() for f in listed] == [
        "b.txt",
        "day=1/part-0.jsonl",
    ]
    assert [f.format for f in listed] == ["text", "jsonl"]
    globbed = list_inputs([str(folder / "**" / "*.jsonl")], None)
    assert [Path(f.url).name for f in globbed] == ["part-0.jsonl"]
    with pytest.raises(BatchError, match="matches no file"):
        list_inputs([str(tmp_path / "*.parquet")], None)
    with pytest.raises(BatchError, match=r"input file .*absent\.jsonl does not exist"):
        list_inputs([str(tmp_path / "absent.jsonl")], None)

    memory = fsspec.filesystem("memory")
    memory.pipe("/switchyard-test/q.jsonl", b'{"text": "from memory"}\n')
    try:
        (remote,) = list_inputs(["memory://switchyard-test/q.jsonl"], None)
        assert remote.url == "memory:///switchyard-test/q.jsonl"
        texts = TextSet(max_chars=50)
        for piece in shard_pieces([remote], 0, 1, "text"):
            read_piece(piece, "text", texts)
        assert list(texts.texts.values()) == ["from memory"]
    finally:
        memory.rm("/switchyard-test", recursive=True)


def test_a_changed_file_changes_its_listing_stamp(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"text": "one"}\n')
    (before,) = list_inputs([str(path)], None)
    path.write_text('{"text": "two"}\n')
    os.utime(path, ns=(0, 1_000_000_000))
    (after,) = list_inputs([str(path)], None)
    assert before.size == after.size and before.modified != after.modified
