"""What a batch run reads: its input files listed once, and cut into pieces for the readers.

An input is a file, a folder (every file under it of a known format, hidden ones aside), a
glob, or any of these as an fsspec URL (s3://, gs://, memory://, ...). The listing records
each file's size and modification stamp, which fingerprint the run (`file_fingerprints`),
so a rerun over unchanged files resumes the same generation without reading them first.

Pieces: all input files, in listing order, span one byte space. A shard i of n owns the
i-th n-th of that space, and reads the lines that start in it (JSONL, text), the CSV files
that start in it and the Parquet row groups that start in it, so the shards of a run read
disjoint parts whose union is the whole input. The Ray engine cuts the same space into
blocks of a fixed size instead, one read task each.
"""

import bisect
from collections.abc import Sequence

from services.batch.errors import BatchError
from services.batch.inputs import (
    FORMATS,
    InputFile,
    InputFormat,
    Piece,
    format_of,
    open_input,
    parquet_row_counts,
)

__all__ = ["block_pieces", "file_fingerprints", "list_inputs", "shard_pieces"]

_GLOB_CHARACTERS = frozenset("*?[")


def list_inputs(specs: Sequence[str], forced: InputFormat | None) -> list[InputFile]:
    """The files that `specs` name, in order; BatchError for a spec that names none."""
    return [file for spec in specs for file in _files_of(spec, forced)]


def _files_of(spec: str, forced: InputFormat | None) -> list[InputFile]:
    # Imported here: the CLI loads this module's callers at every start.
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(spec)
    except (ValueError, ImportError) as exc:
        raise BatchError(f"cannot open input {spec}: {exc}") from None
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local = "file" in protocols

    def listed(found: str, info: dict[str, object]) -> InputFile:
        # A local file keeps the name the user gave or the path found; others their URL.
        url = found if local else str(fs.unstrip_protocol(found))
        return _listed(url, info, forced)

    if _GLOB_CHARACTERS & set(path):
        found = sorted(p for p, info in fs.glob(path, detail=True).items() if _is_file(info))
        if not found:
            raise BatchError(f"input {spec} matches no file")
        return [listed(p, fs.info(p)) for p in found]
    if fs.isdir(path):
        inside = [
            listed(p, info)
            for p, info in sorted(fs.find(path, detail=True).items())
            if _is_file(info)
            and not any(part.startswith((".", "_")) for part in p[len(path) :].split("/"))
            and (forced is not None or _suffix(p) in FORMATS)
        ]
        if not inside:
            raise BatchError(
                f"input folder {spec} holds no JSONL, CSV, text or Parquet file "
                f"({', '.join(FORMATS)})"
            )
        return inside
    if not fs.exists(path):
        raise BatchError(f"input file {spec} does not exist")
    return [_listed(spec if local else str(fs.unstrip_protocol(path)), fs.info(path), forced)]


def _is_file(info: dict[str, object]) -> bool:
    return info.get("type") == "file"


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _listed(url: str, info: dict[str, object], forced: InputFormat | None) -> InputFile:
    size = info.get("size")
    # Local files have an mtime; object stores an ETag or a last-modified time.
    stamp = next(
        (info[key] for key in ("mtime", "ETag", "etag", "LastModified", "updated") if key in info),
        "",
    )
    return InputFile(
        url=url,
        format=format_of(url, forced),
        size=int(size) if isinstance(size, int | float) else 0,
        modified=str(stamp),
    )


def file_fingerprints(files: Sequence[InputFile]) -> list[list[object]]:
    """What identifies the input of a run without reading it."""
    return [[file.url, file.format, file.size, file.modified] for file in files]


def shard_pieces(
    files: Sequence[InputFile], index: int, count: int, text_field: str
) -> list[Piece]:
    """The pieces shard `index` of `count` reads."""
    total = sum(file.size for file in files)
    bounds = [k * total // count for k in range(count + 1)]

    def owner(position: int) -> int:
        return min(bisect.bisect_right(bounds, position) - 1, count - 1)

    pieces = _pieces(files, bounds[1:-1], text_field)
    return [piece for position, piece in pieces if owner(position) == index]


def block_pieces(files: Sequence[InputFile], block_bytes: int, text_field: str) -> list[Piece]:
    """Every piece of the input, JSONL and text files cut every `block_bytes` bytes."""
    total = sum(file.size for file in files)
    cuts = list(range(block_bytes, total, block_bytes))
    return [piece for _, piece in _pieces(files, cuts, text_field)]


def _pieces(
    files: Sequence[InputFile], cuts: Sequence[int], text_field: str
) -> list[tuple[int, Piece]]:
    """(position in the byte space, piece) for every piece, line files cut at `cuts`."""
    pieces: list[tuple[int, Piece]] = []
    base = 0
    for file in files:
        if file.format == "parquet":
            with open_input(file) as handle:
                rows = parquet_row_counts(handle, file.url, text_field)
            total_rows, before = sum(rows), 0
            for group, count in enumerate(rows):
                # A row group starts as far into the file as the rows before it.
                position = base + (file.size * before // total_rows if total_rows else 0)
                pieces.append((position, Piece(file, group, group + 1)))
                before += count
        elif file.format == "csv":
            pieces.append((base, Piece(file, 0, file.size)))
        else:
            inside = [cut - base for cut in cuts if base < cut < base + file.size]
            starts = [0, *inside]
            ends = [*inside, file.size]
            pieces += [
                (base + start, Piece(file, start, end))
                for start, end in zip(starts, ends, strict=True)
                if start < end
            ]
        base += file.size
    return pieces
