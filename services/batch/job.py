"""`switchyard batch run`, top to bottom: read, deduplicate, shard, label, write, verify, flip.

Nothing touches Redis before every input is read and the teacher is found, so a bad file or an
unknown task leaves the current generation as it was. The router only ever follows the
current-generation pointer, which moves in one atomic step after every shard has written and
verified its keys, so no reader sees a half-written generation.
"""

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisError
from tqdm import tqdm

from services.batch.errors import BatchError
from services.batch.inputs import InputFormat, TextSet, format_of, read_file
from services.batch.labels import LabelSource
from services.batch.store import FlipOutcome, GenerationStore, connect
from services.batch.teacher import TeacherInfo
from services.contracts.cache_schema import NAMESPACE_PATTERN, CachedPrediction
from services.contracts.redis_connection import RedisSettings

__all__ = ["BatchOptions", "BatchSettings", "BatchSummary", "Shard", "run_batch"]

_EIGHT_DAYS = 8 * 24 * 3600


class BatchSettings(RedisSettings, BaseSettings):
    """Deployment settings; the environment (SWITCHYARD_BATCH_REDIS_URL, ...) sets them. The
    Redis connection (URL, credentials, TLS) comes from RedisSettings."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_BATCH_", frozen=True)

    redis_timeout_seconds: float = Field(10.0, gt=0)
    redis_cluster: bool = Field(False, description="redis_url is a node of a Redis Cluster")
    build_dir: Path = Path("build")
    # A weekly schedule plus a day of slack: a generation outlives the run that replaces it.
    ttl_seconds: int = Field(_EIGHT_DAYS, gt=0)
    batch_size: int = Field(32, gt=0, description="texts per teacher forward pass")
    write_every: int = Field(512, gt=0, description="texts labelled between two writes")
    max_chars: int = Field(20_000, gt=0, description="longer texts are skipped")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, value: str) -> "Shard":
        index, slash, count = value.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = cls(-1, 0)
        if not slash or not 0 <= shard.index < shard.count:
            raise BatchError(f"--shard must be i/n with 0 <= i < n, got {value!r}")
        return shard

    def owns(self, digest: str) -> bool:
        return int(digest[:8], 16) % self.count == self.index


@dataclass(frozen=True)
class BatchOptions:
    task: str
    inputs: list[Path]
    include_misses: bool = False
    shard: Shard = Shard(0, 1)
    namespace: str = ""
    input_format: InputFormat | None = None
    text_field: str = "text"
    show_progress: bool = True
    teacher: str = "model"  # or "llm-fewshot": the prompted LLM
    shots: int = 3
    selection: str = "nearest"
    seed: int = 0


@dataclass
class BatchSummary:
    task: str
    namespace: str
    shard: Shard
    generation: str = ""
    generation_created_at: float = 0.0
    outcome: str = ""
    rows_read: int = 0
    misses_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unique: int = 0
    in_shard: int = 0
    resumed: int = 0
    written: int = 0
    generation_rows: int = 0
    misses_removed: int = 0
    labelling_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.written / self.labelling_seconds if self.labelling_seconds else 0.0


def _run_id(options: BatchOptions, namespace: str, teacher: LabelSource, max_chars: int) -> str:
    """Same inputs, options and teacher: same run, so a rerun resumes instead of starting over."""
    digests = []
    for path in options.inputs:
        with path.open("rb") as handle:
            digests.append(hashlib.file_digest(handle, "sha256").hexdigest())
    identity = [
        namespace,
        teacher.version,
        digests,
        options.include_misses,
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
    summary = BatchSummary(task=options.task, namespace=namespace, shard=options.shard)
    if not options.inputs and not options.include_misses:
        raise BatchError("nothing to read: pass --input FILE and/or --include-misses")
    teacher = _teacher(options, settings)
    texts = TextSet(max_chars=settings.max_chars)
    for path in options.inputs:
        read_file(path, format_of(path, options.input_format), options.text_field, texts)
    run_id = _run_id(options, namespace, teacher, settings.max_chars)

    store = GenerationStore(
        connect(settings, settings.redis_timeout_seconds, settings.redis_cluster),
        namespace,
        settings.ttl_seconds,
    )
    try:
        _label_and_publish(options, settings, teacher, texts, store, run_id, summary)
    except RedisError as exc:
        raise BatchError(
            f"lost Redis during the run ({type(exc).__name__}: {exc}); the current generation "
            "is unchanged, and a rerun resumes where this one stopped"
        ) from None
    summary.seconds = time.perf_counter() - started
    return summary


def _teacher(options: BatchOptions, settings: BatchSettings) -> LabelSource:
    """The build's fine-tuned teacher, or the prompted LLM; found without loading weights."""
    if options.teacher == "model":
        return TeacherInfo.read(settings.build_dir, options.task)
    if options.teacher != "llm-fewshot":
        raise BatchError(f"unknown teacher {options.teacher!r}; use model or llm-fewshot")
    from services.batch.fewshot_teacher import FewShotTeacher
    from services.prompts.errors import PromptError
    from services.prompts.evaluate import PromptSettings
    from services.prompts.selection import parse_selection

    try:
        return FewShotTeacher.read(
            options.task,
            options.shots,
            parse_selection(options.selection),
            options.seed,
            settings.build_dir,
            PromptSettings(),
        )
    except (PromptError, ValueError) as exc:
        raise BatchError(str(exc)) from None


def _label_and_publish(
    options: BatchOptions,
    settings: BatchSettings,
    teacher: LabelSource,
    texts: TextSet,
    store: GenerationStore,
    run_id: str,
    summary: BatchSummary,
) -> None:
    state = store.claim(run_id, options.shard.count, options.include_misses, time.time())
    summary.generation = state.generation
    summary.generation_created_at = state.created_at
    if options.include_misses:
        summary.misses_read = store.read_misses(state.misses_until, texts)
    summary.rows_read = texts.rows_read
    summary.skipped = dict(texts.skipped)
    summary.duplicates = texts.duplicates
    summary.unique = len(texts.texts)
    if not texts.texts:
        # Finished, so that the next run with these options starts afresh (new misses too).
        store.mark_finished(run_id, time.time())
        if texts.rows_read:
            raise BatchError(
                f"none of the {texts.rows_read} rows holds a usable text "
                f"({', '.join(f'{n} {reason}' for reason, n in texts.skipped.items())}); "
                "the current generation is unchanged"
            )
        summary.outcome = "nothing to label; the current generation is unchanged"
        return

    mine = {d: text for d, text in texts.texts.items() if options.shard.owns(d)}
    summary.in_shard = len(mine)
    todo = store.missing(state.generation, list(mine))
    summary.resumed = len(mine) - len(todo)
    if todo:
        _label_into(options, settings, teacher, store, state.generation, mine, todo, summary)

    absent = store.missing(state.generation, list(mine))
    if absent:
        raise BatchError(
            f"{len(absent)} of {len(mine)} predictions are missing after writing (is Redis "
            "evicting keys? check maxmemory-policy); the current generation is unchanged"
        )
    meta = {
        "created_at": str(state.created_at),
        "model": teacher.model_name,
        "base_model": teacher.base_model,
        "model_version": teacher.version,
        **teacher.describe(),
        "run_id": run_id,
        "ttl_seconds": str(settings.ttl_seconds),
    }
    outcome, rows_so_far = store.finish_shard(
        run_id,
        state.generation,
        options.shard.index,
        options.shard.count,
        len(mine),
        time.time(),
        meta,
    )
    summary.outcome = outcome.value
    if outcome is not FlipOutcome.WAITING:
        summary.generation_rows = rows_so_far
        summary.misses_removed = store.forget_misses(state.misses_until)
        store.mark_finished(run_id, time.time())


def _label_into(
    options: BatchOptions,
    settings: BatchSettings,
    teacher: LabelSource,
    store: GenerationStore,
    generation: str,
    mine: dict[str, str],
    todo: list[str],
    summary: BatchSummary,
) -> None:
    """Label the texts of `todo` with the teacher and write them, one chunk at a time, so a
    killed run loses at most one chunk of work."""
    labeller = teacher.labeller(settings.batch_size)
    # Similar lengths in one chunk keep padding, and so teacher time, low.
    todo = sorted(todo, key=lambda digest: len(mine[digest]))
    progress = tqdm(
        total=len(todo),
        desc=f"{options.task}: {teacher.model_name} labels",
        unit="text",
        disable=not options.show_progress,
    )
    started = time.perf_counter()
    with progress:
        for start in range(0, len(todo), settings.write_every):
            chunk = todo[start : start + settings.write_every]
            labelled = labeller.label([mine[digest] for digest in chunk])
            now = time.time()
            store.write(
                generation,
                [
                    (
                        digest,
                        CachedPrediction(
                            label=result.label,
                            scores=result.scores,
                            model=teacher.model_name,
                            model_version=teacher.version,
                            created_at=now,
                        ).to_json(),
                    )
                    for digest, result in zip(chunk, labelled, strict=True)
                ],
            )
            summary.written += len(chunk)
            summary.labelling_seconds = time.perf_counter() - started
            progress.update(len(chunk))
