"""`switchyard prompts eval` and `batch run --teacher llm-fewshot` with the packaged LLM."""

import json
import os
from pathlib import Path

import pytest

from services.contracts.cache_schema import CachedPrediction, generation_key, generation_meta_key
from services.pipeline.task_file import load_task_file, shipped_task_file
from services.processes.redis_server import RedisServer
from services.prompts.templates import PromptTemplate
from tests.integration.conftest import run_switchyard

SENTIMENT = ["negative", "neutral", "positive"]
SENTIMENT_PROMPT = load_task_file(shipped_task_file("sentiment"), "quick").prompts


def evaluate(tiny_build: Path, out: Path, *args: str) -> dict[str, object]:
    run_switchyard("prompts", "eval", "--build", str(tiny_build), "--out", str(out), *args)
    report: dict[str, object] = json.loads(out.read_text())
    return report


def test_eval_reports_every_shot_count_and_the_student(
    llm_cache: Path, tiny_build: Path, tmp_path: Path
) -> None:
    report = evaluate(
        tiny_build, tmp_path / "r.json", "--task", "sentiment", "--shots", "0,1,3", "--n", "6"
    )
    rows = report["rows"]
    assert isinstance(rows, list)
    llm_rows, student_rows = rows[:3], rows[3:]
    assert [row["shots"] for row in llm_rows] == [0, 1, 3]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert row["seconds_per_prediction"] > 0
    tokens = [row["prompt_tokens_mean"] for row in llm_rows]
    assert tokens[0] < tokens[1] < tokens[2], "each shot adds an example to every prompt"
    assert len(student_rows) == 1 and "student" in student_rows[0]["model"]
    assert report["template_hash"] == PromptTemplate(SENTIMENT_PROMPT, SENTIMENT).digest
    assert report["n"] == 6


def test_nearest_examples_make_one_shot_topic_prompts_accurate(
    llm_cache: Path, tiny_build: Path, tmp_path: Path
) -> None:
    """The nearest training example usually shares the query's topic, and the LLM follows
    it: measured 97.5% on 40 texts against 20-30% with a random example."""
    report = evaluate(
        tiny_build, tmp_path / "r.json", "--task", "topic", "--shots", "1", "--n", "10",
        "--selection", "nearest",
    )  # fmt: skip
    (one_shot, _student) = report["rows"]  # type: ignore[misc]
    assert one_shot["accuracy"] >= 0.7, one_shot


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--task", "weather"], {}, "task 'weather' is not in the build"),
        (["--task", "topic", "--shots", "5"], {"SWITCHYARD_PROMPTS_POOL_SIZE": "3"},
         "5 shots asked for, but the example pool holds only"),
        (["--task", "topic", "--shots", "20", "--max-chars", "100000"], {},
         "tokens, over the 8192-token context of SmolLM2-135M-Instruct"),
        (["--task", "topic", "--shots", "one"], {}, "--shots must be counts"),
        (["--task", "topic", "--selection", "best"], {}, "unknown selection 'best'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    llm_cache: Path, tiny_build: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        result = run_switchyard(
            "prompts", "eval", "--build", str(tiny_build), "--n", "2", *args, check=False
        )
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_batch_job_with_the_prompted_llm_writes_the_cache_format_and_the_prompt_hash(
    llm_cache: Path, tiny_build: Path, tmp_path: Path
) -> None:
    texts = ["I love this phone", "the train is late again", "meeting moved to 3pm"]
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    with RedisServer(tmp_path) as server:
        run_switchyard(
            "batch", "run", "--task", "sentiment", "--input", str(source),
            "--build", str(tiny_build), "--redis-url", server.url, "--no-progress",
            "--teacher", "llm-fewshot", "--shots", "1", "--selection", "random",
        )  # fmt: skip
        client = server.client()
        generation = client.get(generation_key("sentiment"))
        assert generation is not None
        meta = client.hgetall(generation_meta_key("sentiment", generation.decode()))
        values = [
            CachedPrediction.from_json(client.get(key))  # type: ignore[arg-type]
            for key in client.scan_iter(f"switchyard:sentiment:{generation.decode()}:*")
            if not key.endswith(b":meta")
        ]
    assert meta[b"teacher"] == b"llm-fewshot"
    assert meta[b"prompt_hash"].decode() == PromptTemplate(SENTIMENT_PROMPT, SENTIMENT).digest
    assert meta[b"shots"] == b"1" and meta[b"model"] == b"sentiment-llm-1shot"
    assert len(values) == len(texts)
    for value in values:
        assert value.model == "sentiment-llm-1shot"
        assert set(value.scores) == set(SENTIMENT)
        assert abs(sum(value.scores.values()) - 1) < 1e-4
        assert value.label == max(value.scores, key=value.scores.__getitem__)
