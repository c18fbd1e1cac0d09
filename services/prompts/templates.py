"""Classification prompts in the `input: label` format, zero-, one- or few-shot. The
instruction and the answer's field name come from the task file (`prompts:`), e.g.:

    Classify the sentiment of each text as one of: negative, neutral, positive.

    text: what a lovely day
    sentiment: positive

    text: <the query>
    sentiment:

The answer is whichever label is the likeliest continuation. In the `chat` format the same
instruction and examples become system, user and assistant turns of the model's chat
template. A template's hash covers everything that shapes its prompts except the examples,
so a cache generation records exactly how its labels were asked for.
"""

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from services.contracts.build_report import PromptRecord
from services.prompts.errors import PromptError

__all__ = ["FORMATS", "PromptFormat", "PromptTemplate", "Rendered", "clip", "parse_format"]

PromptFormat = Literal["plain", "chat"]
FORMATS: tuple[PromptFormat, ...] = ("plain", "chat")
ChatRenderer = Callable[[list[dict[str, str]], bool], str]

_EXAMPLE = "\n\ntext: {text}\n{field}: {label}"
_QUERY = "\n\ntext: {text}\n{field}:"
_SPACES = re.compile(r"\s+")


def parse_format(value: str) -> PromptFormat:
    for prompt_format in FORMATS:
        if value == prompt_format:
            return prompt_format
    raise PromptError(f"unknown format {value!r}; use {' or '.join(FORMATS)}")


def clip(text: str, max_chars: int) -> str:
    """One line of at most `max_chars` characters, cut at a word boundary."""
    text = _SPACES.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0] or text[:max_chars]
    return cut + " ..."


@dataclass(frozen=True)
class Rendered:
    """A prompt split where examples end, so a prefix shared by many prompts runs once."""

    prefix: str
    query: str
    candidates: list[str]


class PromptTemplate:
    def __init__(
        self,
        prompt: PromptRecord,
        labels: Sequence[str],
        prompt_format: PromptFormat = "plain",
        chat: ChatRenderer | None = None,
        chat_template: str = "",
    ) -> None:
        if prompt_format == "chat" and chat is None:
            raise PromptError("the chat format needs a model with a chat template")
        self.field = prompt.answer_field
        self.labels = list(labels)
        self.instruction = prompt.instruction.format(labels=", ".join(self.labels))
        self.prompt_format = prompt_format
        self._chat = chat
        self._chat_template = chat_template if prompt_format == "chat" else ""

    @property
    def digest(self) -> str:
        """The hash of what shapes every prompt: format, instruction, layout, chat template."""
        identity = [
            self.prompt_format,
            self.instruction,
            self.field,
            _EXAMPLE,
            _QUERY,
            self._chat_template,
        ]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def render(self, examples: Sequence[tuple[str, str]], text: str) -> Rendered:
        """The prompt for `text` after `examples` ((text, label) pairs), cut after them."""
        if self.prompt_format == "plain":
            prefix = self.instruction + "".join(
                _EXAMPLE.format(text=t, field=self.field, label=y) for t, y in examples
            )
            # The cut sits before "\n\n": a prefix ending in whitespace would tokenise
            # differently on its own than inside the whole prompt.
            query = _QUERY.format(text=text, field=self.field)
            return Rendered(prefix, query, [f" {label}" for label in self.labels])
        assert self._chat is not None
        messages = [{"role": "system", "content": self.instruction}]
        for example_text, label in examples:
            messages.append({"role": "user", "content": f"text: {example_text}"})
            messages.append({"role": "assistant", "content": label})
        prefix = self._chat(messages, False)
        whole = self._chat([*messages, {"role": "user", "content": f"text: {text}"}], True)
        if not whole.startswith(prefix):
            raise PromptError("the model's chat template does not extend a conversation")
        return Rendered(prefix, whole[len(prefix) :], list(self.labels))
