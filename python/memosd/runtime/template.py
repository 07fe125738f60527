"""The context-block template: how memories and messages become one token sequence.

Version ``memosd-context-v1``. A generation's token sequence has two parts:

1. **The context block** (the prefix): a system message that carries the
   activated memories. This is the part an activation's KV cache stands for::

       You are a helpful assistant. Use these memories when relevant:
       [1] <memory 1>
       [2] <memory 2>

   With no memories it is just the first line, ending at the full stop.
2. **The turn** (the suffix): the conversation (or the prompt as one user
   message), where retrieved plaintext memories, if any, precede the last user
   message under ``Relevant memories:``; then the generation prompt.

With a chat template (SmolLM2 and most instruct models), both parts are
rendered by it, the turn being the rendering of the whole conversation minus
the rendering of the system message alone. Without one, the plain form is
``<system text>\\n\\n`` then ``User: ...\\nAssistant:`` lines.

The two parts are tokenised separately and concatenated, so the tokens of the
context block are the same whether it is prefilled with the question or loaded
as an activation. Several memories share one activation built in one prefill:
positions never overlap and every memory attends to the ones before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memosd.errors import InvalidArgumentError

VERSION = "memosd-context-v1"
PREAMBLE = "You are a helpful assistant."
MEMORY_INTRO = "Use these memories when relevant:"
RETRIEVED_INTRO = "Relevant memories:"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def numbered(memories: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {m}" for i, m in enumerate(memories, 1))


def system_text(memories: Sequence[str]) -> str:
    if not memories:
        return PREAMBLE
    return f"{PREAMBLE} {MEMORY_INTRO}\n{numbered(memories)}"


def conversation(
    prompt: str, messages: Sequence[Message], retrieved: Sequence[str]
) -> list[Message]:
    """The turn's messages: ``messages`` or ``prompt`` as one user message, with the
    retrieved memories put in front of the last user message."""
    if messages and prompt:
        raise InvalidArgumentError("prompt", "give either prompt or messages, not both")
    turn = list(messages) if messages else [Message("user", prompt)]
    for i, m in enumerate(turn):
        if m.role not in ROLES[1:]:
            raise InvalidArgumentError(f"messages[{i}].role", "expected user or assistant")
    if not turn or turn[-1].role != "user" or not turn[-1].content:
        raise InvalidArgumentError("prompt", "the conversation must end with a user message")
    if retrieved:
        last = turn[-1]
        turn[-1] = Message("user", f"{RETRIEVED_INTRO}\n{numbered(retrieved)}\n\n{last.content}")
    return turn


class PromptTemplate:
    """Renders and tokenises the two parts for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._chat = bool(getattr(tokenizer, "chat_template", None))

    def context_ids(self, memories: Sequence[str]) -> list[int]:
        return self._encode(self._context_text(memories), first=True)

    def turn_ids(
        self,
        memories: Sequence[str],
        prompt: str = "",
        messages: Sequence[Message] = (),
        retrieved: Sequence[str] = (),
    ) -> list[int]:
        """The suffix that follows the context block of ``memories``."""
        turn = conversation(prompt, messages, retrieved)
        if not self._chat:
            lines = [f"{m.role.capitalize()}: {m.content}" for m in turn]
            return self._encode("\n".join([*lines, "Assistant:"]), first=False)
        context = self._context_text(memories)
        whole = self._render([Message("system", system_text(memories)), *turn], True)
        if not whole.startswith(context):
            raise InvalidArgumentError(
                "model", "the tokenizer's chat template does not render the system message first"
            )
        return self._encode(whole[len(context) :], first=False)

    def _context_text(self, memories: Sequence[str]) -> str:
        text = system_text(memories)
        if not self._chat:
            return f"{text}\n\n"
        return self._render([Message("system", text)], False)

    def _render(self, messages: Sequence[Message], generation_prompt: bool) -> str:
        rendered: str = self._tok.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
        return rendered

    def _encode(self, text: str, first: bool) -> list[int]:
        ids: list[int] = self._tok(text, add_special_tokens=False)["input_ids"]
        bos = getattr(self._tok, "bos_token_id", None)
        if first and not self._chat and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids
