"""Generation options, and turning a stream of token ids into a stream of text.

Text is emitted as soon as it is final: not while the decoded tail is an
incomplete UTF-8 sequence, and not while it could still be the start of a stop
string (which is never emitted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memosd.errors import InvalidArgumentError

MAX_NEW_TOKENS_LIMIT = 4096


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 selects greedy decoding."""
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidArgumentError(
                "max_new_tokens", f"must be between 1 and {MAX_NEW_TOKENS_LIMIT}"
            )
        if not self.temperature >= 0.0:
            raise InvalidArgumentError("temperature", "must be >= 0")
        if any(not s for s in self.stop):
            raise InvalidArgumentError("stop", "stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationStats:
    prefix_tokens: int = 0
    """Tokens that came from an injected KV cache (0 when none was injected)."""
    prompt_tokens: int = 0
    """Tokens prefilled for this call."""
    generated_tokens: int = 0
    ttft_ms: float = 0.0
    finish_reason: str = ""
    """"length", "stop" (a stop string), "eos", "cancelled" or "deadline"."""
    token_ids: list[int] = field(default_factory=list)


class TextStream:
    """Incremental detokenisation with stop strings."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self._tok = tokenizer
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Adds a token; returns the text that became final (may be empty)."""
        self._ids.append(token_id)
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        for s in self._stop:
            at = text.find(s, max(0, self._emitted - len(s)))
            if at != -1:
                self.stopped = True
                return self._take(text, at)
        if text.endswith("\ufffd"):
            return ""
        return self._take(text, len(text) - self._held_back(text))

    def flush(self) -> str:
        """The text held back, at the end of generation (no stop string matched)."""
        if self.stopped:
            return ""
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        return self._take(text, len(text))

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that starts a stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, text: str, end: int) -> str:
        end = max(end, self._emitted)
        out = text[self._emitted : end]
        self._emitted = end
        return out
