"""Prompt templates and example selection, without the model."""

import pytest

from services.contracts.build_report import PromptRecord
from services.pipeline.task_file import load_task_file, shipped_task_file
from services.prompts.errors import PromptError
from services.prompts.selection import choose_examples
from services.prompts.templates import PromptTemplate, clip

LABELS = ["negative", "neutral", "positive"]
SENTIMENT = load_task_file(shipped_task_file("sentiment"), "quick").prompts


def test_zero_shot_prompt_is_the_instruction_and_the_query() -> None:
    rendered = PromptTemplate(SENTIMENT, LABELS).render([], "what a day")
    assert rendered.prefix + rendered.query == (
        "Classify the sentiment of each text as one of: negative, neutral, positive."
        "\n\ntext: what a day\nsentiment:"
    )
    assert rendered.candidates == [" negative", " neutral", " positive"]


def test_few_shot_prompt_lists_examples_in_order_in_input_label_lines() -> None:
    examples = [("plum pie", "positive"), ("cold soup", "negative")]
    rendered = PromptTemplate(SENTIMENT, LABELS).render(examples, "lemon tart")
    assert rendered.prefix.endswith(
        "\n\ntext: plum pie\nsentiment: positive\n\ntext: cold soup\nsentiment: negative"
    )
    assert rendered.query == "\n\ntext: lemon tart\nsentiment:"


def test_the_template_hash_follows_the_template_not_the_examples() -> None:
    plain = PromptTemplate(SENTIMENT, LABELS)
    assert plain.digest == PromptTemplate(SENTIMENT, LABELS).digest
    assert plain.digest != PromptTemplate(SENTIMENT, list(reversed(LABELS))).digest
    other = PromptRecord(instruction="Pick one of: {labels}.", answer_field="topic")
    assert plain.digest != PromptTemplate(other, ["a", "b"]).digest
    chat = PromptTemplate(SENTIMENT, LABELS, "chat", chat=lambda m, g: str(m), chat_template="x")
    assert chat.digest != plain.digest


def test_chat_without_a_template_is_a_clear_error() -> None:
    with pytest.raises(PromptError, match="chat template"):
        PromptTemplate(SENTIMENT, LABELS, "chat")


def test_clip_keeps_one_line_and_cuts_at_a_word() -> None:
    assert clip("a  b\n\nc", 10) == "a b c"
    assert clip("alpha beta gamma", 12) == "alpha beta ..."


def test_example_selection() -> None:
    pool = [(f"text {i}", LABELS[i % 3]) for i in range(10)]
    drawn = choose_examples("random", pool, 3, ["q1", "q2"], seed=1)
    assert drawn[0] == drawn[1] and len(drawn[0]) == 3
    assert drawn[0] == choose_examples("random", pool, 3, ["q3"], seed=1)[0]
    assert choose_examples("random", pool, 0, ["q1"], seed=1) == [[]]
    with pytest.raises(PromptError, match="only 10 examples"):
        choose_examples("random", pool, 11, ["q1"], seed=1)
