"""The Ray Data engine of `switchyard batch run --engine ray`.

The driver (this process) lists the input and cuts it into pieces
(`services.batch.input_plan.block_pieces`). Ray read tasks read the pieces with the in-process
engine's own readers, so both engines see the same rows and count the same bad ones. A hash
shuffle on the cache key deduplicates. An autoscaling pool of teacher actors (one GPU each
when the cluster has GPUs, else one CPU) labels the texts that the generation lacks and writes
them to Redis in pipelined chunks; a last pass counts the keys still missing. The driver alone
claims the run and flips the generation (`services.batch.job`), so a driver killed at any
point leaves the current generation as it was, and a rerun finds its generation and labels
only the missing keys.

Workers load the teacher from the build folder at the driver's path and connect to Redis with
the driver's settings, so both must be reachable from every node (a shared volume for the
build, as the Kubernetes RayJob mounts it).
"""

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.batch.errors import BatchError
from services.batch.input_plan import block_pieces
from services.batch.inputs import InputFile, Piece, TextSet, read_piece
from services.batch.labelling import LabelCounts, label_and_write
from services.batch.settings import BatchOptions, BatchSettings, label_source
from services.batch.store import GenerationStore, connect

__all__ = ["RayEngine"]

Batch = dict[str, npt.NDArray[Any]]
_BATCH_ERROR = f"{BatchError.__module__}.{BatchError.__qualname__}: "
# Keys per existence check of the verification pass.
_VERIFY_BATCH = 5000


def _read_pieces(
    batch: Batch, pieces: Sequence[Piece], text_field: str, max_chars: int
) -> dict[str, list[str]]:
    """The unique texts of each piece, then one row of the piece's counts (JSON in `counts`)."""
    digests: list[str] = []
    texts: list[str] = []
    counts: list[str] = []
    for index in batch["piece"]:
        read = TextSet(max_chars=max_chars)
        try:
            read_piece(pieces[int(index)], text_field, read)
        except BatchError as exc:
            # Returned, not raised: Ray would retry it, then wrap it past recognition.
            digests.append("")
            texts.append("")
            counts.append(json.dumps({"error": str(exc)}))
            continue
        digests += read.texts
        texts += read.texts.values()
        counts += [""] * len(read.texts)
        digests.append("")
        texts.append("")
        counts.append(
            json.dumps(
                {
                    "rows_read": read.rows_read,
                    "duplicates": read.duplicates,
                    "bytes_read": read.bytes_read,
                    "skipped": dict(read.skipped),
                }
            )
        )
    return {"digest": digests, "text": texts, "counts": counts}


def _counts_only(batch: Batch) -> Batch:
    return {"counts": batch["counts"][batch["counts"] != ""]}


def _texts_only(batch: Batch) -> Batch:
    keep = batch["counts"] == ""
    return {"digest": batch["digest"][keep], "text": batch["text"][keep]}


def _store(settings: BatchSettings, namespace: str) -> GenerationStore:
    client = connect(settings, settings.redis_timeout_seconds, settings.redis_cluster)
    return GenerationStore(client, namespace, settings.ttl_seconds)


class _TeacherWriter:
    """A teacher actor: labels the batch's texts that the generation lacks, writes them."""

    def __init__(
        self,
        options: BatchOptions,
        settings: BatchSettings,
        namespace: str,
        generation: str,
        threads: int | None,
    ) -> None:
        self._teacher = label_source(options, settings)
        self._labeller = self._teacher.labeller(settings.batch_size, threads)
        self._store = _store(settings, namespace)
        self._generation = generation

    def __call__(self, batch: Batch) -> Batch:
        pairs = [(str(d), str(t)) for d, t in zip(batch["digest"], batch["text"], strict=True)]
        absent = set(self._store.missing(self._generation, [digest for digest, _ in pairs]))
        # Unsorted: the labeller batches its texts by length itself.
        todo = [pair for pair in pairs if pair[0] in absent]
        if todo:
            label_and_write(self._teacher, self._labeller, self._store, self._generation, todo)
        return {"written": np.array([len(todo)]), "resumed": np.array([len(pairs) - len(todo)])}


def _count_missing(batch: Batch, settings: BatchSettings, namespace: str, generation: str) -> Batch:
    store = _store(settings, namespace)
    digests = [str(digest) for digest in batch["digest"]]
    return {"missing": np.array([len(store.missing(generation, digests))])}


def _user_error(exc: BaseException) -> BatchError:
    """The BatchError a Ray task raised (Ray keeps only its traceback's text, which ends with
    the error's own line), else the last line of Ray's message."""
    lines = str(exc).strip().splitlines()
    for line in lines:
        if line.startswith(_BATCH_ERROR):
            return BatchError(line.removeprefix(_BATCH_ERROR))
    return BatchError(f"the Ray job failed: {type(exc).__name__}: {lines[-1] if lines else ''}")


class RayEngine:
    def __init__(self, options: BatchOptions, settings: BatchSettings, files: list[InputFile]):
        import ray
        import ray.data

        self._ray = ray
        self._options = options
        self._settings = settings
        self._files = files
        self._namespace = options.namespace or options.task
        try:
            # No address: RAY_ADDRESS names the cluster (a RayJob sets it), else a local Ray.
            ray.init(
                address=options.ray_address,
                include_dashboard=False,
                # Ray's own notes (token auth, progress bars off) are not the job's output.
                logging_level=logging.ERROR,
                log_to_driver=options.show_progress,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = options.ray_address or "RAY_ADDRESS or a local Ray"
            raise BatchError(f"cannot start or reach Ray ({where}): {exc}") from None
        # Ray Data logs every stage it starts; the progress bars (or nothing) say enough.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.show_progress
        resources = ray.cluster_resources()
        self._gpus = int(resources.get("GPU", 0))
        self._cpus = max(int(resources.get("CPU", 1)), 1)
        self._counts = TextSet(max_chars=settings.max_chars)
        # Ray datasets: the rows read, the texts read from Redis (misses), the unique texts.
        self._rows: Any = None
        self._from_redis: Any = None
        self._texts: Any = None
        self._unique = 0

    def read(self) -> None:
        ray = self._ray
        pieces = block_pieces(self._files, self._settings.ray_block_bytes, self._options.text_field)
        if not pieces:
            return
        dataset = ray.data.from_items(
            [{"piece": index} for index in range(len(pieces))], override_num_blocks=len(pieces)
        ).map_batches(
            _read_pieces,
            batch_size=1,
            fn_kwargs={
                "pieces": pieces,
                "text_field": self._options.text_field,
                "max_chars": self._settings.max_chars,
            },
        )
        self._rows = self._run(dataset.materialize)
        for row in self._run(self._rows.map_batches(_counts_only).take_all):
            counts = json.loads(row["counts"])
            if "error" in counts:
                raise BatchError(counts["error"])
            self._counts.rows_read += counts["rows_read"]
            self._counts.duplicates += counts["duplicates"]
            self._counts.bytes_read += counts["bytes_read"]
            self._counts.skipped.update(Counter(counts["skipped"]))

    def add_texts(self, extra: TextSet) -> None:
        self._counts.add_counts(extra)
        if extra.texts:
            rows = [{"digest": d, "text": t} for d, t in extra.texts.items()]
            self._from_redis = self._ray.data.from_items(rows)

    def counts(self) -> tuple[TextSet, int]:
        from ray.data.aggregate import Max

        parts = [part for part in (self._rows, self._from_redis) if part is not None]
        if not parts:
            return self._counts, 0
        if self._rows is not None:
            parts[0] = self._rows.map_batches(_texts_only)
        texts = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        total: int = self._run(texts.count)
        if total:
            # One text per key: a key is the hash of the normalised text, so any will do.
            partitions = min(max(2 * self._cpus, total // 200_000), 200)
            grouped = texts.groupby("digest", num_partitions=partitions)
            self._texts = self._run(grouped.aggregate(Max("text", alias_name="text")).materialize)
            self._unique = self._run(self._texts.count)
        self._counts.duplicates += total - self._unique
        return self._counts, self._unique

    def label(self, store: GenerationStore, generation: str) -> LabelCounts:
        ray = self._ray
        workers = self._options.ray_workers or self._gpus or self._cpus
        resources = {"num_gpus": 1} if self._gpus else {"num_cpus": 1}
        started = time.perf_counter()
        written = self._texts.map_batches(
            _TeacherWriter,
            batch_size=self._settings.write_every,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            fn_constructor_kwargs={
                "options": self._options,
                "settings": self._settings,
                "namespace": self._namespace,
                "generation": generation,
                "threads": None if self._gpus else 1,
            },
            **resources,
        )
        counts = LabelCounts()
        for row in self._run(written.take_all):
            counts.written += int(row["written"])
            counts.resumed += int(row["resumed"])
        counts.seconds = time.perf_counter() - started
        return counts

    def count_missing(self, store: GenerationStore, generation: str) -> int:
        counted = self._texts.map_batches(
            _count_missing,
            batch_size=_VERIFY_BATCH,
            fn_kwargs={
                "settings": self._settings,
                "namespace": self._namespace,
                "generation": generation,
            },
        )
        return sum(int(row["missing"]) for row in self._run(counted.take_all))

    def close(self) -> None:
        self._ray.shutdown()

    def _run(self, step: Any) -> Any:
        """Run one Ray step; a task's BatchError (a bad file, a missing build on a worker)
        comes back as itself, anything else as one line."""
        try:
            return step()
        except BatchError:
            raise
        except Exception as exc:
            raise _user_error(exc) from None
