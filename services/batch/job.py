"""`switchyard batch run`, top to bottom: list, read, claim, label, write, verify, flip.

Two engines do the reading and labelling. The in-process engine (the default) reads this
shard's share of the input (`--shard i/n`: its byte range of the input files) and labels it
here; the Ray engine reads, deduplicates and labels with Ray Data on a Ray cluster
(`services.batch.ray_engine`). Everything else is this module's, the same for both: the run's
fingerprint, the claim of its generation, the misses, the verification and the flip.

Nothing touches Redis before every input is read and the teacher is found, so a bad file or an
unknown task leaves the current generation as it was. The router only ever follows the
current-generation pointer, which moves in one atomic step after every shard has written and
verified its keys, so no reader sees a half-written generation.
"""

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.exceptions import RedisError
from tqdm import tqdm

from services.batch.errors import BatchError
from services.batch.input_plan import file_fingerprints, list_inputs, shard_pieces
from services.batch.inputs import InputFile, TextSet, read_piece
from services.batch.labelling import LabelCounts, label_and_write
from services.batch.labels import LabelSource
from services.batch.settings import BatchOptions, BatchSettings, Shard, label_source
from services.batch.store import FlipOutcome, GenerationStore, connect
from services.contracts.cache_schema import NAMESPACE_PATTERN
from services.contracts.quality_schema import QualityRecord

__all__ = ["BatchSummary", "Engine", "run_batch"]


@dataclass
class BatchSummary:
    task: str
    namespace: str
    shard: Shard
    engine: str = "in-process"
    generation: str = ""
    generation_created_at: float = 0.0
    outcome: str = ""
    rows_read: int = 0
    bytes_read: int = 0
    misses_read: int = 0
    top_misses_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unique: int = 0
    in_shard: int = 0
    resumed: int = 0
    written: int = 0
    generation_rows: int = 0
    misses_removed: int = 0
    week_misses: int = 0  # uncached texts the routers counted over the last 7 days
    week_misses_answered: int = 0  # of them, answered by the generation (at least)
    labelling_seconds: float = 0.0
    seconds: float = 0.0
    quality: QualityRecord | None = None  # --score-samples: the teacher's verdict on them

    @property
    def rows_per_second(self) -> float:
        return self.written / self.labelling_seconds if self.labelling_seconds else 0.0


class Engine(Protocol):
    """Reads the texts of a run and labels the ones its generation lacks."""

    def read(self) -> None:
        """Read the input files; BatchError for one that cannot be read. Touches no Redis."""

    def add_texts(self, extra: TextSet) -> None:
        """Add texts read from Redis (the misses) to those of the files."""

    def counts(self) -> tuple[TextSet, int]:
        """Row counts of everything read (texts aside), and the number of unique texts."""

    def label(self, store: GenerationStore, generation: str) -> LabelCounts:
        """Label and write the texts missing from `generation`."""

    def count_missing(self, store: GenerationStore, generation: str) -> int:
        """How many of the texts `generation` still lacks."""

    def close(self) -> None: ...


def _run_id(
    options: BatchOptions,
    namespace: str,
    teacher: LabelSource,
    files: Sequence[InputFile],
    max_chars: int,
) -> str:
    """Same inputs, options and teacher: same run, so a rerun resumes instead of starting over.
    Files count by name, size and modification stamp, so no shard reads them all for this."""
    identity = [
        namespace,
        teacher.version,
        file_fingerprints(files),
        options.include_misses,
        options.top_misses,
        options.shard.count,
        options.input_format,
        options.text_field,
        max_chars,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def run_batch(options: BatchOptions, settings: BatchSettings) -> BatchSummary:
    started = time.perf_counter()
    namespace = options.namespace or options.task
    if not re.match(NAMESPACE_PATTERN, namespace):
        raise BatchError(f"namespace {namespace!r} holds braces, colons or spaces; name another")
    if not options.inputs and not options.include_misses and not options.top_misses:
        raise BatchError(
            "nothing to read: pass --input FILE, --include-misses and/or --top-misses N"
        )
    if options.score_samples and options.teacher != "model":
        raise BatchError("--score-samples needs the build's teacher (--teacher model)")
    if options.top_misses < 0:
        raise BatchError(f"--top-misses must be 0 or more, got {options.top_misses}")
    if options.engine == "ray" and options.shard.count > 1:
        raise BatchError("--shard is for the in-process engine; Ray spreads the work itself")
    summary = BatchSummary(
        task=options.task, namespace=namespace, shard=options.shard, engine=options.engine
    )
    teacher = label_source(options, settings)
    files = list_inputs(options.inputs, options.input_format)
    run_id = _run_id(options, namespace, teacher, files, settings.max_chars)
    engine = _engine(options, settings, teacher, files)
    try:
        engine.read()
        store = GenerationStore(
            connect(settings, settings.redis_timeout_seconds, settings.redis_cluster),
            namespace,
            settings.ttl_seconds,
        )
        _label_and_publish(options, settings, teacher, engine, store, run_id, summary)
    except RedisError as exc:
        raise BatchError(
            f"lost Redis during the run ({type(exc).__name__}: {exc}); the current generation "
            "is unchanged, and a rerun resumes where this one stopped"
        ) from None
    finally:
        engine.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _engine(
    options: BatchOptions, settings: BatchSettings, teacher: LabelSource, files: list[InputFile]
) -> Engine:
    if options.engine == "ray":
        # Ray loads only for its engine: the in-process one runs where Ray is not installed.
        from services.batch.ray_engine import RayEngine

        return RayEngine(options, settings, files)
    return InProcessEngine(options, settings, teacher, files)


def _label_and_publish(
    options: BatchOptions,
    settings: BatchSettings,
    teacher: LabelSource,
    engine: Engine,
    store: GenerationStore,
    run_id: str,
    summary: BatchSummary,
) -> None:
    state = store.claim(run_id, options.shard.count, options.include_misses, time.time())
    summary.generation = state.generation
    summary.generation_created_at = state.created_at
    extra = TextSet(max_chars=settings.max_chars)
    owns = None if options.shard.count == 1 else options.shard.owns
    if options.include_misses:
        summary.misses_read = store.read_misses(state.misses_until, extra, owns)
    if options.top_misses:
        summary.top_misses_read = store.read_top_misses(
            options.top_misses, time.time(), extra, owns
        )
    engine.add_texts(extra)
    counts, unique = engine.counts()
    summary.rows_read = counts.rows_read
    summary.bytes_read = counts.bytes_read
    summary.skipped = dict(counts.skipped)
    summary.duplicates = counts.duplicates
    summary.unique = summary.in_shard = unique
    if not unique and options.shard.count == 1:
        # Finished, so that the next run with these options starts afresh (new misses too).
        store.mark_finished(run_id, time.time())
        if counts.rows_read:
            raise BatchError(
                f"none of the {counts.rows_read} rows holds a usable text "
                f"({', '.join(f'{n} {reason}' for reason, n in counts.skipped.items())}); "
                "the current generation is unchanged"
            )
        summary.outcome = "nothing to label; the current generation is unchanged"
        return

    # A shard whose share holds no text still reports, so that the others can flip.
    if unique:
        labelled = engine.label(store, state.generation)
        summary.written, summary.resumed = labelled.written, labelled.resumed
        summary.labelling_seconds = labelled.seconds
        absent = engine.count_missing(store, state.generation)
        if absent:
            raise BatchError(
                f"{absent} of {unique} predictions are missing after writing (is Redis "
                "evicting keys? check maxmemory-policy); the current generation is unchanged"
            )
    meta = {
        "created_at": str(state.created_at),
        "model": teacher.model_name,
        "base_model": teacher.base_model,
        "model_version": teacher.version,
        **teacher.describe(),
        "engine": options.engine,
        "run_id": run_id,
        "ttl_seconds": str(settings.ttl_seconds),
    }
    outcome, rows_so_far = store.finish_shard(
        run_id,
        state.generation,
        options.shard.index,
        options.shard.count,
        unique,
        time.time(),
        meta,
    )
    summary.outcome = outcome.value
    if outcome in (FlipOutcome.FLIPPED, FlipOutcome.FLIPPED_BEFORE):
        summary.generation_rows = rows_so_far
        summary.misses_removed = store.forget_misses(state.misses_until)
        summary.week_misses_answered, summary.week_misses = store.misses_answered(
            state.generation, time.time()
        )
    if outcome is not FlipOutcome.WAITING:
        store.mark_finished(run_id, time.time())
        if options.score_samples:
            # Imported here: only runs that score load its module.
            from services.batch.quality import score_samples

            scoring = score_samples(
                settings,
                options.task,
                summary.namespace,
                options.teacher_runtime,
                options.show_progress,
            )
            summary.quality = scoring.record


class InProcessEngine:
    """Reads this shard's pieces of the input and labels them in this process."""

    def __init__(
        self,
        options: BatchOptions,
        settings: BatchSettings,
        teacher: LabelSource,
        files: list[InputFile],
    ) -> None:
        self._options = options
        self._settings = settings
        self._teacher = teacher
        self._files = files
        self._texts = TextSet(max_chars=settings.max_chars)

    def read(self) -> None:
        shard = self._options.shard
        text_field = self._options.text_field
        for piece in shard_pieces(self._files, shard.index, shard.count, text_field):
            read_piece(piece, text_field, self._texts)

    def add_texts(self, extra: TextSet) -> None:
        self._texts.merge(extra)

    def counts(self) -> tuple[TextSet, int]:
        return self._texts, len(self._texts.texts)

    def label(self, store: GenerationStore, generation: str) -> LabelCounts:
        """Label the missing texts and write them, one chunk at a time, so a killed run loses
        at most one chunk of work."""
        texts = self._texts.texts
        todo = store.missing(generation, list(texts))
        counts = LabelCounts(resumed=len(texts) - len(todo))
        if not todo:
            return counts
        labeller = self._teacher.labeller(self._settings.batch_size)
        # Similar lengths in one chunk keep padding, and so teacher time, low.
        todo.sort(key=lambda digest: len(texts[digest]))
        progress = tqdm(
            total=len(todo),
            desc=f"{self._options.task}: {self._teacher.model_name} labels",
            unit="text",
            disable=not self._options.show_progress,
        )
        started = time.perf_counter()
        every = self._settings.write_every
        with progress:
            for start in range(0, len(todo), every):
                chunk = [(digest, texts[digest]) for digest in todo[start : start + every]]
                label_and_write(self._teacher, labeller, store, generation, chunk)
                counts.written += len(chunk)
                counts.seconds = time.perf_counter() - started
                progress.update(len(chunk))
        return counts

    def count_missing(self, store: GenerationStore, generation: str) -> int:
        return len(store.missing(generation, list(self._texts.texts)))

    def close(self) -> None:
        """Nothing to release: the engine holds no process or connection of its own."""
