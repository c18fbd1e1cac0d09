"""Texts for the offline batch job: JSONL, CSV, text or Parquet files, and the router's misses.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.batch.errors import BatchError
from services.contracts.cache_schema import text_hash
from services.contracts.text import normalize_text

__all__ = ["FORMATS", "InputFormat", "TextSet", "format_of", "parse_format", "read_file"]

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


@dataclass
class TextSet:
    """Unique normalised texts by hash, with the count of every row that did not make it."""

    max_chars: int
    texts: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

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


def parse_format(value: str) -> InputFormat:
    """An input format named by the user (`--format`)."""
    for known in dict.fromkeys(FORMATS.values()):
        if value == known:
            return known
    raise BatchError(f"unknown format {value!r}; use {', '.join(sorted(set(FORMATS.values())))}")


def format_of(path: Path, forced: InputFormat | None) -> InputFormat:
    if forced is not None:
        return forced
    if path.suffix.lower() in FORMATS:
        return FORMATS[path.suffix.lower()]
    known = ", ".join(FORMATS)
    raise BatchError(
        f"cannot tell the format of {path} from its suffix ({known}); "
        "pass --format jsonl, csv, text or parquet"
    )


def read_file(path: Path, file_format: InputFormat, text_field: str, into: TextSet) -> None:
    """Add every row of `path` to `into`; BatchError when the file cannot be read at all."""
    try:
        if file_format == "parquet":
            # Parquet is binary by design, so the NUL probe of the text formats does not apply.
            _read_parquet(path, text_field, into)
            return
        with path.open("rb") as handle:
            if b"\0" in handle.read(_BINARY_PROBE_BYTES):
                raise BatchError(f"{path} is a binary file, not {file_format} text")
            handle.seek(0)
            lines = _decoded_lines(handle, into)
            if file_format == "jsonl":
                _read_jsonl(lines, text_field, into)
            elif file_format == "csv":
                _read_csv(path, lines, text_field, into)
            else:
                for line in lines:
                    if line.strip():
                        into.add(line)
    except FileNotFoundError:
        raise BatchError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise BatchError(f"input {path} is a folder, not a file") from None
    except OSError as exc:
        raise BatchError(f"cannot read {path}: {exc.strerror}") from None


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


def _read_csv(path: Path, lines: Iterable[str], text_field: str, into: TextSet) -> None:
    reader = csv.DictReader(lines)
    columns = reader.fieldnames or []
    if text_field not in columns:
        raise BatchError(
            f"{path} has no column {text_field!r} (columns: {', '.join(columns) or 'none'}); "
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


def _read_parquet(path: Path, text_field: str, into: TextSet) -> None:
    # Imported here so that importing this module (and the CLI) does not load pyarrow.
    import pyarrow.parquet as pq
    from pyarrow.lib import ArrowException

    # Opened by Python, so a missing file or a folder is reported as for the other formats.
    with path.open("rb") as handle:
        try:
            parquet = pq.ParquetFile(handle)
            columns: list[str] = parquet.schema_arrow.names
            if text_field not in columns:
                raise BatchError(
                    f"{path} has no column {text_field!r} "
                    f"(columns: {', '.join(columns) or 'none'}); pass --text-field"
                )
            for batch in parquet.iter_batches(columns=[text_field]):
                for value in batch.column(0).to_pylist():
                    if value is None:
                        into.skip(f"no {text_field!r} value")
                    else:
                        into.add(value)
        except (ArrowException, OSError) as exc:
            # pyarrow's I/O errors are OSErrors without a strerror; its messages may run on.
            lines = str(exc).strip().splitlines()
            reason = lines[0].strip() if lines else type(exc).__name__
            raise BatchError(f"cannot read {path} as Parquet: {reason}") from None
