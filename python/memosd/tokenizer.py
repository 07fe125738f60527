"""The BERT encoder's tokenizer, read from the model's ``tokenizer.json``.

A file that describes BERT's pipeline (``BertNormalizer``, ``BertPreTokenizer``, a
``WordPiece`` model, special tokens around the text, added tokens matched in the raw
text) runs on ``memosd._native.WordPieceTokenizer``: the ids HF tokenizers gives,
without its per-text offsets and Python objects (a query is tokenized on every
search; ``tests/test_wordpiece.py`` holds the ids to HF's). Any other pipeline runs
on HF tokenizers.
"""

from __future__ import annotations

import json
import logging
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memosd.errors import FailedPreconditionError

log = logging.getLogger(__name__)


class BatchTokenizer(Protocol):
    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (int64) of every text one after another, and where each text
        starts (int64, ``len(texts) + 1``): text i is ``ids[offsets[i]:offsets[i + 1]]``."""


class _Unsupported(Exception):
    """The file asks for something the native tokenizer does not do (the reason)."""


def load_tokenizer(path: Path, max_tokens: int) -> BatchTokenizer:
    """The tokenizer ``path`` describes, cutting each text to at most ``max_tokens`` ids,
    its special tokens included. A file that cannot be read or used raises
    ``FailedPreconditionError`` naming it."""
    try:
        config = json.loads(path.read_text())
        try:
            args = _native_args(config)
        except _Unsupported as reason:
            log.info("%s: tokenizing with HF tokenizers (%s)", path, reason)
            return _HfTokenizer(path, max_tokens)
        from memosd._native import WordPieceTokenizer

        tokenizer = WordPieceTokenizer(max_tokens=max_tokens, **args)
    except (OSError, ValueError, TypeError, KeyError) as e:  # InvalidArgumentError included
        raise FailedPreconditionError(
            f"cannot load the tokenizer {path}: {type(e).__name__}: {e}"
        ) from e
    log.info("%s: tokenizing natively (memosd._native.WordPieceTokenizer)", path)
    return tokenizer


def _native_args(config: dict[str, Any]) -> dict[str, Any]:
    """``WordPieceTokenizer``'s arguments for the parsed ``tokenizer.json``; raises
    ``_Unsupported`` for a pipeline it does not reproduce, and ``KeyError``,
    ``TypeError`` or ``ValueError`` for a malformed one. Absent fields take HF's
    defaults."""
    normalizer = _section(config, "normalizer", "BertNormalizer")
    _section(config, "pre_tokenizer", "BertPreTokenizer")
    model = _section(config, "model", "WordPiece")
    prefix, suffix = _special_ids(config.get("post_processor"))
    added = config.get("added_tokens") or []
    for token in added:
        # Matching after normalisation, or only as a whole word, or with the
        # whitespace around: HF options that BERT files do not use.
        options = [k for k in ("normalized", "single_word", "lstrip", "rstrip") if token.get(k)]
        if options:
            raise _Unsupported(f"added token {token['content']!r} with {', '.join(options)}")
    lowercase = normalizer.get("lowercase", True)
    strip_accents = normalizer.get("strip_accents")  # None: as lowercase
    return {
        "vocab": model["vocab"],
        "unk_token": model.get("unk_token", "[UNK]"),
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
        "clean_text": normalizer.get("clean_text", True),
        "handle_chinese_chars": normalizer.get("handle_chinese_chars", True),
        "strip_accents": lowercase if strip_accents is None else strip_accents,
        "lowercase": lowercase,
        "added_tokens": [(t["content"], t["id"]) for t in added],
        "prefix": prefix,
        "suffix": suffix,
    }


def _section(config: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
    """``config[key]``, which must be of type ``kind``."""
    section = config.get(key)
    if not isinstance(section, dict) or section.get("type") != kind:
        got = section.get("type") if isinstance(section, dict) else section
        raise _Unsupported(f"{key} {got!r}, not {kind}")
    return section


def _special_ids(processor: Any) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single text."""
    kind = processor.get("type") if isinstance(processor, dict) else processor
    if kind == "BertProcessing":
        return [processor["cls"][1]], [processor["sep"][1]]
    if kind != "TemplateProcessing":
        raise _Unsupported(f"post_processor {kind!r}")
    # The template for one text: special tokens around the sequence "A", e.g.
    # [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": ...}].
    before: list[int] = []
    after: list[int] | None = None
    for piece in processor["single"]:
        if "Sequence" in piece and after is None:
            after = []
        elif "SpecialToken" in piece:
            ids = processor["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (before if after is None else after).extend(ids)
        else:
            raise _Unsupported(f"post_processor template {processor['single']!r}")
    if after is None:
        raise _Unsupported("post_processor template without the text")
    return before, after


class _HfTokenizer:
    """HF tokenizers, for the pipelines ``WordPieceTokenizer`` does not reproduce."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.no_padding()  # batches are ragged (see BertEncoder.encode)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # The fast batch call skips the character offsets, which nothing here reads
        # (the same ids; a fifth of the time for 8 queries). Each `ids` is a new list.
        id_lists = [e.ids for e in self._tokenizer.encode_batch_fast(texts)]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(i) for i in id_lists], out=offsets[1:])
        ids = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(offsets[-1]))
        return ids, offsets
