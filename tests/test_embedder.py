"""The default embedder: the real all-MiniLM-L6-v2 from its package, offline."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from memosd.embedder import Embedder
from memosd.errors import FailedPreconditionError, InvalidArgumentError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    e = Embedder.default(batch_size=16)
    e.load()
    return e


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    out = embedder.encode(["a cat sat on the mat", "", "x" * 5000])
    assert embedder.dim == 384
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_matches_sentence_transformers_and_is_order_independent(embedder: Embedder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [f"sentence number {i} about {'cats ' * (i % 5)}and dogs" for i in range(40)]
    reference = SentenceTransformer(str(embedder.model_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    # batch_size 16 and longest-first ordering must not change any row.
    np.testing.assert_allclose(embedder.encode(texts), reference, atol=1e-5)
    np.testing.assert_allclose(embedder.encode(texts[::-1])[::-1], reference, atol=1e-5)


def test_meaning_is_captured(embedder: Embedder) -> None:
    q, near, far = embedder.encode(
        ["what does the user like to drink?", "the user prefers green tea", "the bus leaves at 9"]
    )
    assert q @ near > q @ far + 0.1


def test_concurrent_callers_get_their_own_rows(embedder: Embedder) -> None:
    texts = [f"thread {t} asks question {i} about gardening" for t in range(8) for i in range(6)]
    expected = {t: embedder.encode([t])[0] for t in texts}
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            mine = texts[offset::8]
            for text in mine:
                results[text] = embedder.encode([text])[0]
            big = embedder.encode(mine * 5)  # a bulk request mixed in with single queries
            np.testing.assert_allclose(big[: len(mine)], big[len(mine) : 2 * len(mine)], atol=1e-5)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for text, row in results.items():
        np.testing.assert_allclose(row, expected[text], atol=1e-5)


def test_bad_input_names_the_field(embedder: Embedder) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        embedder.encode("one string")
    assert e.value.field == "texts"
    with pytest.raises(InvalidArgumentError) as e:
        embedder.encode(["ok", 3])  # type: ignore[list-item]
    assert e.value.field == "texts[1]"
    with pytest.raises(InvalidArgumentError):
        Embedder.default(batch_size=0)


def test_not_a_model_directory(tmp_path) -> None:
    with pytest.raises(FailedPreconditionError):
        Embedder(tmp_path)


def test_the_daemon_embeds_without_torch() -> None:
    """A daemon with no language model configured never imports torch (the embedder is NumPy)."""
    code = (
        "import sys; from memosd.embedder import Embedder; "
        "Embedder.default().encode(['a short query']); "
        "from memosd.ops.runtime import Runtime; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


# ---- int8 (quantize=True) ---------------------------------------------------------

REAL_TEXTS = [
    "Caroline went to the LGBTQ support group yesterday and found it really inspiring.",
    "Melanie painted a sunrise over the lake last year; it hangs in her living room.",
    "I'm planning a camping trip with my kids next month, probably in the mountains.",
    "The quarterly report is due on Friday, and finance still needs the revenue figures.",
    "My doctor told me to cut back on coffee and drink more water during the day.",
    "We adopted a rescue dog named Biscuit; he is scared of thunderstorms.",
    "The user prefers green tea over coffee in the morning.",
    "Reminder: the bus to the airport leaves at 9 from the north entrance.",
    "She has been learning to play the violin since she was seven years old.",
    "What did Caroline research for her career in counseling?",
]


@pytest.fixture(scope="module")
def int8_embedder() -> Embedder:
    e = Embedder.default(batch_size=16, quantize=True)
    e.load()
    return e


def test_int8_vectors_are_close_to_float32(embedder: Embedder, int8_embedder: Embedder) -> None:
    exact = embedder.encode(REAL_TEXTS)
    quantized = int8_embedder.encode(REAL_TEXTS)
    assert quantized.shape == exact.shape and quantized.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, rtol=1e-5)
    cosines = (exact * quantized).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    # Not the float32 path under another name.
    assert cosines.min() < 0.99999


def test_int8_ranks_like_float32(embedder: Embedder, int8_embedder: Embedder) -> None:
    queries = [
        "what does the user like to drink?",
        "when does the airport bus leave?",
        "which pet is afraid of storms?",
        "what musical instrument does she play?",
    ]
    for e in (embedder, int8_embedder):
        scores = e.encode(queries) @ e.encode(REAL_TEXTS).T
        assert list(scores.argmax(axis=1)) == [6, 7, 5, 8]
    exact = embedder.encode(queries) @ embedder.encode(REAL_TEXTS).T
    quantized = int8_embedder.encode(queries) @ int8_embedder.encode(REAL_TEXTS).T
    # int8 moves a score by up to ~0.015 here, and which way depends on float32
    # rounding anywhere upstream (a code on a rounding edge flips, and the flip
    # spreads through the later layers): texts whose float32 scores are closer than
    # that may swap places. So: every score within 0.03, and int8's top three are
    # texts that float32 scores within 0.03 of its own third best.
    assert np.abs(exact - quantized).max() < 0.03
    for a, b in zip(exact, quantized, strict=True):
        third = np.sort(a)[-3]
        assert all(a[j] > third - 0.03 for j in np.argsort(-b)[:3]), (a, b)


def test_int8_query_vector_does_not_depend_on_its_batch(int8_embedder: Embedder) -> None:
    query = "what does the user like to drink?"
    alone = int8_embedder.encode([query])[0]
    # Seven other texts of other lengths, some much longer: padding and per-row scales
    # must leave the query's vector as it is (up to float32 rounding in attention).
    batch = int8_embedder.encode([*REAL_TEXTS[:3], query, *REAL_TEXTS[3:6], "word " * 200])
    np.testing.assert_allclose(batch[3], alone, atol=1e-5)


def test_queries_embed_in_int8_and_memories_in_float32(
    embedder: Embedder, int8_embedder: Embedder
) -> None:
    from memosd._native import Int8Linear

    if Int8Linear(np.ones((1, 4), dtype=np.float32)).kernel == "scalar":
        pytest.skip("no SIMD int8 kernel here: queries fall back to float32")
    queries = [*REAL_TEXTS[-1:], "what does the user like to drink?"]
    as_query = embedder.encode_queries(queries)
    # The query lane runs the int8 encoder; the memory lane stays float32.
    np.testing.assert_array_equal(as_query, int8_embedder.encode(queries))
    cosines = (as_query * embedder.encode(queries)).sum(axis=1)
    assert cosines.min() >= 0.99 and cosines.max() < 0.99999, cosines


def test_float32_queries_when_asked() -> None:
    e = Embedder.default(quantize_queries=False)
    queries = ["what does the user like to drink?"]
    np.testing.assert_array_equal(e.encode_queries(queries), e.encode(queries))


def _collect(worker, n: int) -> dict:
    """``n`` results of a query worker, waiting on its descriptor as an event loop would."""
    import select

    got: dict = {}
    while len(got) < n:
        readable, _, _ = select.select([worker], [], [], 30)
        assert readable, f"no result within 30s ({len(got)} of {n})"
        got.update(worker.take())
    return got


def test_native_query_worker_gives_the_query_lanes_vectors(embedder: Embedder) -> None:
    from memosd.errors import ResourceExhaustedError

    worker = embedder.native_query_encoder(max_batch=3)
    if worker is None:
        pytest.skip("no SIMD int8 kernel here: queries embed in float32, in Python")
    texts = [*REAL_TEXTS[:4], "what does the user like to drink?", "word " * 300]
    for i, text in enumerate(texts):  # more than one batch
        worker.submit(("query", i), text)
    got = _collect(worker, len(texts))
    assert sorted(got) == [("query", i) for i in range(len(texts))]
    expected = embedder.encode_queries(texts)
    for i in range(len(texts)):
        np.testing.assert_allclose(got[("query", i)], expected[i], atol=1e-5)
    worker.submit("last", texts[0])
    worker.close()  # finishes what is queued
    worker.close()
    [(tag, vector)] = worker.take()
    assert tag == "last" and vector.shape == (embedder.dim,)
    with pytest.raises(ResourceExhaustedError):
        worker.submit("late", texts[0])


def test_native_query_worker_refuses_bad_arguments(embedder: Embedder) -> None:
    if embedder.native_query_encoder(1) is None:
        pytest.skip("no SIMD int8 kernel here: queries embed in float32, in Python")
    with pytest.raises(InvalidArgumentError) as e:
        embedder.native_query_encoder(max_batch=0)
    assert e.value.field == "max_batch"
    worker = embedder.native_query_encoder(1)
    with pytest.raises(InvalidArgumentError):
        worker.submit("tag", b"not text")  # type: ignore[arg-type]
    worker.close()
    # A layer of the wrong shape is refused when the worker is made, not per query.
    from memosd._native import QueryEncoder

    encoder = embedder._queries.encoder  # type: ignore[union-attr]
    tables = (encoder._word, encoder._position, encoder._token_type, encoder._ln_g, encoder._ln_b)
    layers = list(encoder._int8_layers)
    layers[1] = (layers[1][1], *layers[1][1:])  # the output product in the qkv place
    with pytest.raises(InvalidArgumentError) as e:
        QueryEncoder(encoder._tokenizer, tables, encoder.eps, encoder.heads, layers, 4)
    assert e.value.field == "layers" and "qkv" in str(e.value)


def test_float32_queries_get_the_threaded_worker() -> None:
    from memosd.query_encoder import ThreadedQueryEncoder, query_queue

    e = Embedder.default(quantize_queries=False)
    worker = query_queue(e)
    assert isinstance(worker, ThreadedQueryEncoder)
    worker.submit(7, "what does the user like to drink?")
    got = _collect(worker, 1)
    expected = e.encode_queries(["what does the user like to drink?"])[0]
    np.testing.assert_array_equal(got[7], expected)
    worker.close()
