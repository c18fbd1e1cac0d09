"""Texts for the offline batch job: JSONL, CSV, text or Parquet files, and the router's misses.

Files are read a piece at a time (`services.batch.input_plan` cuts them): a byte range of a
JSONL or text file (the lines that start inside it), a whole CSV file (a quoted field may
hold a newline, so a CSV cannot be cut at a byte), or row groups of a Parquet file. Files are
opened with fsspec, so a piece may live on a local disk or in object storage.
A bad row (invalid JSON, no text, not UTF-8, too long) is counted under its reason and
skipped; only a file that cannot be read at all (missing, binary, not Parquet, no text column)
is an error. Parquet is read a record batch at a time, only the text column, through pyarrow,
which is imported only when a Parquet file is read.
Texts are normalised with the router's own function and deduplicated by their cache hash.
"""

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from services.batch.errors import BatchError
from services.contracts.cache_schema import text_hash
from services.contracts.text import normalize_text

__all__ = [
    "FORMATS",
    "InputFile",
    "InputFormat",
    "Piece",
    "TextSet",
    "format_of",
    "open_input",
    "parse_format",
    "read_piece",
]

InputFormat = Literal["jsonl", "csv", "text", "parquet"]
FORMATS: dict[str, InputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".txt": "text",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# How much of a file is searched for a NUL byte, the sign of a binary (unreadable) file.
_BINARY_PROBE_BYTES = 8192


@dataclass(frozen=True)
class InputFile:
    """One file of a run's input, as listed when the run started."""

    url: str  # what fsspec opens: a local path or a URL such as s3://bucket/queries.jsonl
    format: "InputFormat"
    size: int
    modified: str  # mtime, or the store's ETag: part of the run's fingerprint


@dataclass(frozen=True)
class Piece:
    """What one reader reads of `file`: bytes [start, end) of a JSONL, text or CSV file (a CSV
    piece is always the whole file), or row groups [start, end) of a Parquet file."""

    file: InputFile
    start: int
    end: int


@dataclass
class TextSet:
    """Unique normalised texts by hash, with the count of every row that did not make it."""

    max_chars: int
    texts: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0

    def add(self, text: object) -> None:
        self.rows_read += 1
        if not isinstance(text, str):
            self.skipped["text is not a string"] += 1
            return
        normalized = normalize_text(text)
        if not normalized:
            self.skipped["empty text"] += 1
        elif len(normalized) > self.max_chars:
            self.skipped[f"longer than {self.max_chars} characters"] += 1
        else:
            # The router hashes the text as sent, so the key is taken from it, not `normalized`.
            digest = text_hash(text)
            if digest in self.texts:
                self.duplicates += 1
            else:
                self.texts[digest] = normalized

    def skip(self, reason: str) -> None:
        self.rows_read += 1
        self.skipped[reason] += 1

    def merge(self, other: "TextSet") -> None:
        """Add the texts and row counts of `other`; a text both hold counts as a duplicate."""
        self.add_counts(other)
        for digest, text in other.texts.items():
            if digest in self.texts:
                self.duplicates += 1
            else:
                self.texts[digest] = text

    def add_counts(self, other: "TextSet") -> None:
        """Add the row counts of `other`, whose texts were kept elsewhere."""
        self.rows_read += other.rows_read
        self.duplicates += other.duplicates
        self.skipped.update(other.skipped)
        self.bytes_read += other.bytes_read


def parse_format(value: str) -> InputFormat:
    """An input format named by the user (`--format`)."""
    for known in dict.fromkeys(FORMATS.values()):
        if value == known:
            return known
    raise BatchError(f"unknown format {value!r}; use {', '.join(sorted(set(FORMATS.values())))}")


def format_of(name: str, forced: InputFormat | None) -> InputFormat:
    if forced is not None:
        return forced
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    if suffix in FORMATS:
        return FORMATS[suffix]
    known = ", ".join(FORMATS)
    raise BatchError(
        f"cannot tell the format of {name} from its suffix ({known}); "
        "pass --format jsonl, csv, text or parquet"
    )


@contextmanager
def open_input(file: InputFile) -> Iterator[IO[bytes]]:
    """`file` opened for reading bytes; BatchError when it cannot be opened."""
    # Imported here: fsspec is for the batch job only, and this module loads with the CLI.
    import fsspec

    try:
        with fsspec.open(file.url, "rb") as handle:
            yield handle
    except FileNotFoundError:
        raise BatchError(f"input file {file.url} does not exist") from None
    except IsADirectoryError:
        raise BatchError(f"input {file.url} is a folder, not a file") from None
    except PermissionError as exc:
        raise BatchError(f"cannot read {file.url}: {exc.strerror or exc}") from None


def read_piece(piece: Piece, text_field: str, into: TextSet) -> None:
    """Add every row of `piece` to `into`; BatchError when its file cannot be read at all."""
    file = piece.file
    try:
        with open_input(file) as handle:
            if file.format == "parquet":
                # Parquet is binary by design, so the NUL probe of the text formats does not apply.
                _read_parquet(handle, file.url, text_field, range(piece.start, piece.end), into)
                return
            handle.seek(piece.start)
            if b"\0" in handle.read(_BINARY_PROBE_BYTES):
                raise BatchError(f"{file.url} is a binary file, not {file.format} text")
            lines = _decoded_lines(_lines_starting_in(handle, piece.start, piece.end, into), into)
            if file.format == "jsonl":
                _read_jsonl(lines, text_field, into)
            elif file.format == "csv":
                _read_csv(file.url, lines, text_field, into)
            else:
                for line in lines:
                    if line.strip():
                        into.add(line)
    except OSError as exc:
        raise BatchError(f"cannot read {file.url}: {exc.strerror or exc}") from None


def _lines_starting_in(handle: IO[bytes], start: int, end: int, into: TextSet) -> Iterator[bytes]:
    """The lines whose first byte lies in [start, end): a line cut by `start` belongs to the
    piece before, and the last line may run past `end`, so every line is read exactly once."""
    handle.seek(max(start - 1, 0))
    # The rest of the line the byte before `start` belongs to (just its newline, if it ends
    # one) is the previous piece's.
    position = start - 1 + len(handle.readline()) if start > 0 else 0
    for raw in handle:
        if position >= end:
            break
        position += len(raw)
        into.bytes_read += len(raw)
        yield raw


def _decoded_lines(handle: Iterable[bytes], into: TextSet) -> Iterator[str]:
    for raw in handle:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            into.skip("not UTF-8")


def _read_jsonl(lines: Iterable[str], text_field: str, into: TextSet) -> None:
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            into.skip("invalid JSON")
            continue
        if not isinstance(row, dict) or text_field not in row:
            into.skip(f"no {text_field!r} field")
            continue
        into.add(row[text_field])


def _read_csv(name: str, lines: Iterable[str], text_field: str, into: TextSet) -> None:
    reader = csv.DictReader(lines)
    columns = reader.fieldnames or []
    if text_field not in columns:
        raise BatchError(
            f"{name} has no column {text_field!r} (columns: {', '.join(columns) or 'none'}); "
            "pass --text-field"
        )
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            into.skip("malformed CSV row")
            continue
        value = row.get(text_field)
        if value is None:
            into.skip(f"no {text_field!r} value")
        else:
            into.add(value)


def parquet_row_counts(handle: IO[bytes], name: str, text_field: str) -> list[int]:
    """The rows of each row group of a Parquet file that has the column `text_field`."""
    with _parquet_errors(name):
        parquet = _parquet_file(handle, name, text_field)
        metadata = parquet.metadata
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def _parquet_file(handle: IO[bytes], name: str, text_field: str) -> Any:
    # Imported here so that importing this module (and the CLI) does not load pyarrow.
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(handle)
    columns: list[str] = parquet.schema_arrow.names
    if text_field not in columns:
        raise BatchError(
            f"{name} has no column {text_field!r} "
            f"(columns: {', '.join(columns) or 'none'}); pass --text-field"
        )
    return parquet


@contextmanager
def _parquet_errors(name: str) -> Iterator[None]:
    from pyarrow.lib import ArrowException

    try:
        yield
    except (ArrowException, OSError) as exc:
        # pyarrow's I/O errors are OSErrors without a strerror; its messages may run on.
        lines = str(exc).strip().splitlines()
        reason = lines[0].strip() if lines else type(exc).__name__
        raise BatchError(f"cannot read {name} as Parquet: {reason}") from None


def _read_parquet(
    handle: IO[bytes], name: str, text_field: str, row_groups: range, into: TextSet
) -> None:
    with _parquet_errors(name):
        parquet = _parquet_file(handle, name, text_field)
        for batch in parquet.iter_batches(row_groups=list(row_groups), columns=[text_field]):
            for value in batch.column(0).to_pylist():
                if value is None:
                    into.skip(f"no {text_field!r} value")
                else:
                    into.add(value)
        for index in row_groups:
            group = parquet.metadata.row_group(index)
            into.bytes_read += sum(
                group.column(j).total_compressed_size
                for j in range(group.num_columns)
                if group.column(j).path_in_schema == text_field
            )
