"""Labelled texts from the user's files: JSONL, CSV, Parquet, or one folder per label.

Every row comes with where it was read (file and line or row), so each data error the build
reports is one line that names them. Nothing here drops a row silently: a row that cannot be
used is an error, and the user fixes the file or the task file.
"""

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.pipeline.errors import PipelineError

__all__ = ["DataError", "LabelledRow", "format_of", "read_labelled"]

_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class DataError(PipelineError):
    """The task's data cannot be trained on; the message names the file and row."""


@dataclass(frozen=True)
class LabelledRow:
    text: str
    label: str
    where: str


def format_of(path: Path, forced: str | None) -> str:
    if forced is not None:
        return forced
    if path.is_dir():
        return "folders"
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise DataError(
        f"cannot tell the format of {path} from its suffix ({', '.join(_SUFFIXES)}); "
        "set data.format to jsonl, csv, parquet or folders"
    )


def _decode(raw: bytes, path: Path, encoding: str, errors: str) -> str:
    # A UTF-8 file may start with a byte-order mark (spreadsheets write one): not text.
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line} is not valid {encoding.removesuffix('-sig')} "
            f"(byte 0x{raw[exc.start]:02x}); "
            "set data.encoding, or data.encoding_errors: replace"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"data file {path} is a folder; set data.format: folders") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None


def _row(text: object, label: object, where: str, text_field: str) -> LabelledRow:
    if not isinstance(text, str):
        raise DataError(f"{where}: {text_field!r} is not a text")
    if not text.strip():
        raise DataError(f"{where}: empty text")
    if label is None or (isinstance(label, str) and not label.strip()):
        raise DataError(f"{where}: no label")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataError(f"{where}: label {label!r} is not a name or a number")
    return LabelledRow(text, str(label).strip(), where)


def _missing_column(path: Path, column: str, columns: list[str]) -> DataError:
    listed = ", ".join(columns) or "none"
    return DataError(f"{path} has no column {column!r} (columns: {listed})")


def _jsonl(path: Path, text: str, text_field: str, label_field: str) -> Iterator[LabelledRow]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise DataError(f"{where}: not valid JSON") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: not a JSON object")
        for field in (text_field, label_field):
            if field not in record:
                raise DataError(f"{where}: no {field!r} field")
        yield _row(record[text_field], record[label_field], where, text_field)


def _csv(path: Path, text: str, text_field: str, label_field: str) -> Iterator[LabelledRow]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = list(reader.fieldnames or [])
    for field in (text_field, label_field):
        if field not in columns:
            raise _missing_column(path, field, columns)
    try:
        for row in reader:
            where = f"{path} line {reader.line_num}"
            yield _row(row.get(text_field), row.get(label_field), where, text_field)
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None


def _parquet(path: Path, text_field: str, label_field: str) -> Iterator[LabelledRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    columns = table.schema_arrow.names
    for field in (text_field, label_field):
        if field not in columns:
            raise _missing_column(path, field, columns)
    number = 0
    for batch in table.iter_batches(columns=[text_field, label_field]):
        values = batch.to_pydict()
        for text, label in zip(values[text_field], values[label_field], strict=True):
            number += 1
            yield _row(text, label, f"{path} row {number}", text_field)


def _folders(path: Path, encoding: str, errors: str) -> Iterator[LabelledRow]:
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist")
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.glob("*.txt")):
            # Universal newlines, as Path.read_text reads them.
            text = _decode(_read_bytes(file), file, encoding, errors)
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            yield _row(text, folder.name, str(file), "text")


def read_labelled(
    path: Path,
    data_format: str,
    text_field: str,
    label_field: str,
    encoding: str,
    errors: str,
) -> list[LabelledRow]:
    """Every row of `path`, in file order; DataError (one line) for the first bad one."""
    if data_format == "folders":
        return list(_folders(path, encoding, errors))
    if data_format == "parquet":
        return list(_parquet(path, text_field, label_field))
    text = _decode(_read_bytes(path), path, encoding, errors)
    if data_format == "csv":
        return list(_csv(path, text, text_field, label_field))
    return list(_jsonl(path, text, text_field, label_field))
