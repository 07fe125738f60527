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
