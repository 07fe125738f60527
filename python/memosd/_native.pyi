"""Type stub of ``memosd._native``, the Rust extension (rust/py). Hand-written;
``python -m mypy.stubtest memosd._native`` checks it against the built module."""

from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from typing import Any, Final, TypeAlias, final

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

__all__: list[str] = []

# ---- HNSW index (rust/core/src/hnsw, rust/py/src/hnsw.rs) --------------------

__all__ += ["MISSING_ID", "HnswImage", "HnswIndex", "IdFilter"]

MISSING_ID: Final[int]
"""``2**64 - 1``: the id ``HnswIndex.search`` reports where fewer than ``k`` results
exist (its distance is ``+inf``). It cannot be added as an id."""

@final
class HnswImage:
    """An ``HnswIndex`` serialised at one moment (``HnswIndex.image``)."""

    def save(self, path: str | PathLike[str]) -> None:
        """Write the image to ``path`` atomically, as ``HnswIndex.save`` does."""

@final
class IdFilter:
    """A reusable restriction for ``HnswIndex.search(allowed=...)``: to ``ids``, or
    with ``excluding`` to every id but ``ids`` (ids added later included). The slots
    it resolves to are cached per index state, so repeated searches skip the lookups;
    the excluding form is built and resolved from the ids it leaves out, for filters
    that pass most of an index."""

    def __new__(cls, ids: npt.NDArray[np.uint64], *, excluding: bool = False) -> IdFilter: ...
    @property
    def excluding(self) -> bool: ...
    def __len__(self) -> int:
        """Number of distinct ids (allowed, or left out if ``excluding``)."""

@final
class HnswIndex:
    """Approximate nearest-neighbour index (HNSW), parameters named as in hnswlib.

    Distances (smaller is nearer): ``cosine`` is ``1 - cos`` (vectors are stored
    normalised; zero vectors are rejected), ``ip`` is ``1 - dot``, ``l2`` is the
    squared Euclidean distance. The graph is walked on int8-quantised copies of the
    vectors and the candidates are re-ranked with exact float32 distances.

    The index grows as needed: ``max_elements`` only reserves memory up front
    (``ResourceExhaustedError`` when memory runs out while growing).
    Searches may run concurrently from many threads; ``add`` and ``delete`` wait for
    them. Every call releases the GIL, and batch ``add``/``search`` use all cores.
    Bad input raises ``memosd.errors.InvalidArgumentError`` (a ``ValueError``)
    naming the argument and what was expected, and leaves the index unchanged.
    """

    def __new__(
        cls,
        dim: int,
        metric: str = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        max_elements: int = 0,
    ) -> HnswIndex:
        """``metric`` is ``"cosine"``, ``"ip"`` or ``"l2"``; ``m`` in 2..=1024."""

    def add(
        self,
        ids: npt.NDArray[np.uint64],
        vectors: npt.NDArray[np.float32],
        *,
        hidden: bool = False,
    ) -> None:
        """Insert ``ids`` (uint64, shape ``(n,)``) with ``vectors`` (float32, shape
        ``(n, dim)``). Re-adding an id replaces its vector; within one call the last
        row for an id wins. Rows must be finite. With ``hidden``, no search returns
        the new rows until ``reveal`` (an id that was present stops being returned at
        once); a hidden row counts in ``len`` and ``in``, and is saved as deleted."""

    def reveal(self, ids: npt.NDArray[np.uint64]) -> int:
        """Let searches return ``ids`` added hidden (others are ignored); returns how
        many were hidden."""

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k: int = 10,
        ef_search: int = 64,
        allowed: npt.NDArray[np.uint64] | IdFilter | None = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
        """The ``k`` nearest live ids of each query row (float32, shape ``(q, dim)``):
        ``(ids, distances)``, both of shape ``(q, k)``, nearest first. Missing results
        are ``MISSING_ID`` with distance ``+inf``. ``k`` is at most ``2**20``;
        ``ef_search`` (raised to ``k`` if lower) is the beam width. ``allowed``
        restricts results to those ids (unknown ids are ignored): the filter is
        applied inside the graph walk, and a small allowed set is scanned instead
        (then re-ranked exactly), so recall holds at any selectivity."""

    def delete(self, ids: npt.NDArray[np.uint64]) -> int:
        """Delete ``ids`` (unknown ones are ignored); returns how many were present.
        Deleted ids are never returned; their slots are reused by later adds."""

    def save(self, path: str | PathLike[str]) -> None:
        """Write the index to ``path`` atomically (versioned, CRC-32 checked). Adds
        wait only while the index is copied, not while the file is written."""

    def image(self) -> HnswImage:
        """The index serialised as it is now, for ``HnswImage.save`` later: a
        caller can take a consistent copy under its own lock and write it after."""

    @staticmethod
    def load(path: str | PathLike[str]) -> HnswIndex:
        """Read an index written by ``save``. A truncated or damaged file raises
        ``memosd.errors.CorruptDataError``; a missing file ``OSError``."""

    def memory_bytes(self) -> int:
        """Approximate bytes held by the index."""

    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def m(self) -> int: ...
    @property
    def ef_construction(self) -> int: ...
    def __len__(self) -> int:
        """Number of live ids."""

    def __contains__(self, id: int, /) -> bool: ...

# ---- KV packing and paging (rust/core/src/kv, rust/py/src/kv.rs) -------------

# ---- KV pages and the page pool (issue 4) ------------------------------------
# Tensors are buffer-protocol objects (numpy arrays, bytes, memoryviews), C-contiguous,
# of shape `shape` given in `layout` order: a permutation of the axes L (layer),
# H (KV head), S (token), D (head dim), e.g. "LHSD". dtype: "f32", "f16" or "bf16"
# (bf16 travels as uint16 bits). encoding: "raw" (as is) or "int8" (per-channel
# scales). Unpacked arrays are float32, float16, or uint16 for bf16.

_Tensor: TypeAlias = Buffer | npt.NDArray[Any]

__all__ += [
    "KvPageHeader",
    "KvPagePool",
    "kv_pack",
    "kv_page_header",
    "kv_unpack",
    "kv_verify_page",
]

def kv_pack(
    keys: _Tensor,
    values: _Tensor,
    *,
    layout: str,
    dtype: str,
    shape: Sequence[int],
    tokens_per_page: int,
    encoding: str = "raw",
    sequence_id: int = 0,
) -> list[bytes]:
    """Packs keys and values into pages of `tokens_per_page` tokens (the last holds the rest)."""

def kv_unpack(
    pages: Sequence[_Tensor], layout: str | None = None
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Unpacks the pages of one sequence, in order, into (keys, values) in `layout`
    (default: the pages' own). CorruptDataError for damaged or truncated pages;
    InvalidArgumentError("pages") for missing, reordered or foreign pages."""

def kv_page_header(page: _Tensor) -> KvPageHeader:
    """Decodes a page header (checked against its own checksum) without reading the payload."""

def kv_verify_page(page: _Tensor) -> KvPageHeader:
    """Checks a whole page, header and payload."""

@final
class KvPageHeader:
    @property
    def dtype(self) -> str: ...
    @property
    def encoding(self) -> str: ...
    @property
    def layout(self) -> str: ...
    @property
    def shape(self) -> list[int]:
        """This page's block, in its layout's order."""
    @property
    def token_start(self) -> int: ...
    @property
    def token_count(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def sequence_id(self) -> int: ...
    @property
    def page_len(self) -> int: ...

@final
class KvPagePool:
    """Pages under string keys within a RAM budget. Least recently used pages leave RAM;
    one not yet persisted is first written with `put_blob(bytes) -> digest`; pages come
    back on demand with `get_blob(digest) -> bytes` and are verified before use."""

    def __new__(
        cls,
        budget_bytes: int,
        put_blob: Callable[[bytes], str],
        get_blob: Callable[[str], bytes],
    ) -> KvPagePool: ...
    @property
    def budget_bytes(self) -> int: ...
    def set_budget(self, budget_bytes: int) -> None: ...
    @property
    def resident_bytes(self) -> int: ...
    @property
    def resident_pages(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: str, /) -> bool: ...
    def is_resident(self, key: str) -> bool: ...
    def pack(
        self,
        prefix: str,
        keys: _Tensor,
        values: _Tensor,
        *,
        layout: str,
        dtype: str,
        shape: Sequence[int],
        tokens_per_page: int,
        encoding: str = "raw",
        sequence_id: int = 0,
    ) -> list[str]:
        """Packs into pages stored under f"{prefix}/{i}"; returns those keys."""
    def insert(self, key: str, page: _Tensor) -> None: ...
    def register(self, key: str, digest: str) -> None:
        """Records that `key`'s page is in the blob table under `digest` (not loaded)."""
    def get(self, key: str) -> bytes: ...
    def persist(self, key: str) -> str:
        """Writes the page to the blob table unless it is there already; returns its digest."""
    def digest(self, key: str) -> str | None: ...
    def remove(self, key: str) -> bool: ...
    def unpack(
        self, keys: Sequence[str], layout: str | None = None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]: ...
    def stats(self) -> dict[str, int]:
        """hits, loads, spills, evictions, resident_bytes, resident_pages, pages."""

# ---- Int8 matrix product (rust/core/src/gemm, rust/py/src/gemm.rs) ------------

__all__ += ["Int8Linear"]

@final
class Int8Linear:
    """A linear layer with int8 weights: ``y = x @ weight.T + bias``.

    ``weight`` is float32 ``(out_features, in_features)``, torch's ``Linear`` layout;
    it is quantised per output feature (symmetric, scale ``max|w| / 127``) and packed
    once. Each row of ``x`` is quantised on its own at call time, so a row's output
    does not depend on the other rows. The integer products are exact: every kernel
    (``"amx"``, ``"avx512vnni"``, ``"avx2"``, ``"scalar"``; the fastest the CPU and OS
    allow unless ``kernel`` names one) gives bit-identical results. ``activation``
    ``"gelu"`` applies BERT's erf GELU to the outputs in the product's epilogue (the
    same floats as ``gelu_in_place`` on them). Arrays must be C-contiguous float32;
    bad input raises ``InvalidArgumentError`` naming the argument.
    """

    def __new__(
        cls,
        weight: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32] | None = None,
        kernel: str | None = None,
        activation: str | None = None,
    ) -> Int8Linear: ...
    @property
    def in_features(self) -> int: ...
    @property
    def out_features(self) -> int: ...
    @property
    def kernel(self) -> str:
        """The kernel the products run on."""
    @property
    def activation(self) -> str | None:
        """The activation applied to the outputs, or None."""
    def weight_codes(self) -> npt.NDArray[np.int8]:
        """The int8 weight codes, ``(out_features, in_features)``."""
    def weight_scales(self) -> npt.NDArray[np.float32]:
        """One scale per output feature: ``weight ~= weight_codes() * scales[:, None]``."""
    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``x`` float32 ``(m, in_features)`` -> float32 ``(m, out_features)``:
        ``(q(x) @ weight_codes().T) * row_scale * weight_scales() + bias`` (then the
        activation, if any), where
        ``q(x) = rint(x * (127 / max|row|))`` and ``row_scale = max|row| / 127``.
        Large products use all cores; the GIL is released."""

# ---- Activations (rust/core/src/activation/, rust/py/src/activation.rs) -------

__all__ += ["gelu_in_place"]

def gelu_in_place(x: npt.NDArray[np.float32]) -> None:
    """BERT's exact (erf) GELU over every element of ``x``, in place (absolute error
    about 1e-7 times ``1 + |x|``). ``x`` must be a writable C-contiguous float32 array;
    anything else raises ``InvalidArgumentError`` naming ``x``."""

# ---- Encoder (rust/core/src/transformer/, rust/py/src/transformer.rs) ---------

__all__ += ["add_layer_norm", "attention", "embed_tokens", "int8_encoder", "mean_pool"]

def embed_tokens(
    ids: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    word: npt.NDArray[np.float32],
    position: npt.NDArray[np.float32],
    token_type: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    eps: float,
) -> npt.NDArray[np.float32]:
    """BERT's input rows for a ragged batch of token ids: row ``offsets[i] + p`` is
    ``layer_norm((word[ids[r]] + position[p]) + token_type) * gamma + beta``, float32
    ``(len(ids), len(gamma))``. ``ids`` and ``offsets`` are int64 (``offsets`` as for
    ``attention``); the tables C-contiguous float32 with rows of ``len(gamma)``,
    ``token_type`` one row. An id outside the word table or a sequence longer than
    the position table raises ``InvalidArgumentError`` naming ``ids``; other bad
    input names its argument."""

def attention(
    qkv: npt.NDArray[np.float32], offsets: npt.NDArray[np.int64], heads: int
) -> npt.NDArray[np.float32]:
    """Multi-head self-attention of each sequence of a ragged batch.

    ``qkv`` is float32 ``(rows, 3 * hidden)``: every token's query, key and value
    projections side by side, each ``heads`` blocks of ``hidden // heads``. Sequence
    i is rows ``offsets[i]:offsets[i + 1]`` (int64, rising from 0 to ``rows``); tokens
    attend to their own sequence only, so nothing is padded. Returns the context rows,
    float32 ``(rows, hidden)``. Bad input raises ``InvalidArgumentError`` naming the
    argument.
    """

def add_layer_norm(
    x: npt.NDArray[np.float32],
    residual: npt.NDArray[np.float32] | None,
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    eps: float,
) -> None:
    """``x = layer_norm(x + residual) * gamma + beta`` over rows of ``len(gamma)``
    values, in place (without ``residual``, the layer norm of ``x``). Arrays are
    C-contiguous float32, ``x`` writable; bad input raises ``InvalidArgumentError``
    naming the argument."""

# The embedding tables (word, position, token_type, gamma, beta) and one int8 layer
# (qkv, out, ln1_gamma, ln1_beta, up, down, ln2_gamma, ln2_beta).
_Embeddings: TypeAlias = tuple[
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
]
_Int8Layer: TypeAlias = tuple[
    Int8Linear,
    Int8Linear,
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    Int8Linear,
    Int8Linear,
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
]

def int8_encoder(
    ids: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    embeddings: _Embeddings,
    eps: float,
    heads: int,
    layers: list[_Int8Layer],
) -> npt.NDArray[np.float32]:
    """A BERT sentence encoder with int8 products, token ids to embeddings in one call
    with the GIL released once: ``embed_tokens(ids, offsets, *embeddings, eps)`` (the
    tables word, position, token_type, gamma, beta), then the post-norm layers, then
    ``mean_pool``. Each layer is ``(qkv, out, ln1_gamma, ln1_beta, up, down, ln2_gamma,
    ln2_beta)`` with ``up`` carrying its GELU; per layer ``h = add_layer_norm(out(
    attention(qkv(x))), x)``, ``x = add_layer_norm(down(up(h)), h)``. The same floats
    as those calls one by one. Bad input raises ``InvalidArgumentError`` naming the
    argument."""

def mean_pool(
    x: npt.NDArray[np.float32], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Sentence embeddings of a ragged batch: for each sequence (``offsets`` as for
    ``attention``), the mean of its rows of ``x`` (float32 ``(rows, hidden)``),
    divided by its L2 norm (at least 1e-12); float32 ``(len(offsets) - 1, hidden)``.
    An empty sequence gives zeros. Bad input raises ``InvalidArgumentError`` naming
    the argument."""

# ---- Lexical scoring (rust/core/src/lexical.rs, rust/py/src/lexical.rs) --------

__all__ += ["Bm25Index"]

@final
class Bm25Index:
    """Okapi BM25 (k1 1.2, b 0.75) over document slots, updated incrementally: each
    term's postings are ascending slots with term frequencies, and its float32
    weights are recomputed when a query needs them after the average length moved.
    Thread-safe (one lock)."""

    def __new__(cls) -> Bm25Index: ...
    def __len__(self) -> int: ...
    def upsert(self, slot: int, tokens: Sequence[str]) -> None:
        """Index ``tokens`` (with repeats; their count is the length) as the document
        in ``slot`` (< 2**32), replacing what was there."""
    def remove(self, slot: int) -> None:
        """Forget the document in ``slot``, if any."""
    def search(
        self, terms: Sequence[str], k: int, allowed: npt.NDArray[np.bool_] | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` best slots with score > 0 for the distinct ``terms``, best first,
        limited to the slots ``allowed`` holds true for: ``postings_top_k`` over the
        terms' postings with their BM25 weights and IDFs, summed in its order. A
        ``terms`` that is not a list of str, or a bad ``allowed``, raises
        ``InvalidArgumentError`` naming it."""

__all__ += ["AsciiTerms"]

@final
class AsciiTerms:
    """The index terms of ASCII text as ``memosd.search.lexical.tokenize`` makes
    them (runs of two or more of ``[A-Za-z0-9_]``, lower-cased, ``stop_words``
    dropped, a plural ``s`` stripped from terms longer than three characters but not
    after another ``s``). Only ASCII: a non-iterable or non-str ``stop_words``
    raises ``InvalidArgumentError`` naming it."""

    def __new__(cls, stop_words: Iterable[str]) -> AsciiTerms: ...
    def __call__(self, text: str) -> list[str] | None:
        """The terms of ``text`` in order, with repeats; None if it is not ASCII."""

__all__ += ["postings_top_k"]

def postings_top_k(
    terms: Sequence[tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32], float]],
    slots: int,
    k: int,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``k`` slots with the highest ``sum of idf * weight`` over ``terms``
    (each: the slots containing the term, their weights, the term's idf), best first,
    ties by lower slot. Only sums above zero count and, with ``allowed``, only slots
    ``s < len(allowed)`` with ``allowed[s]``. Every slot must be below ``slots``;
    bad arrays raise ``InvalidArgumentError`` naming ``terms[i]`` or ``allowed``.
    The GIL is released while it runs.

    Sums are float32, each slot's ``idf * weight`` added in this order: terms by
    their largest ``idf * weight`` (0 if that is smaller), highest first, ties by
    position in ``terms``; within a term, in the given order. The result is exactly
    that of adding every posting, but once the best ``k`` are settled the low-IDF
    terms are only searched for the slots that can still make it, which needs
    their slots strictly ascending; a term given in any other order is read in
    full, and nothing is skipped until it has been."""

# ---- Rank fusion (rust/core/src/fusion.rs, rust/py/src/fusion.rs) ------------

__all__ += ["fuse_rankings"]

def fuse_rankings(
    rankings: Sequence[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]],
    weights: Sequence[float],
    rrf_k: float | None = None,
    min_spans: Sequence[float] | None = None,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]:
    """Every key of ``rankings`` (each: keys and scores, best first) with the sum over
    rankings of ``weight * unit``, best first, ties by lower key; a key's units are
    added in the order of the rankings. Units are the scores min-max scaled to
    [0, 1] over their ranking (all 1 when equal) or, with ``rrf_k``, ``1 / (rrf_k +
    rank)`` with ranks from 1. ``min_spans`` (one per ranking, in [0, 1], default 0)
    widens a min-max scale to at least that fraction of a positive top score: its
    bottom is at most ``top * (1 - min_span)``. Bad arrays, non-finite scores or weights, a
    weight or span count other than the ranking count, a span outside [0, 1], or a
    negative ``rrf_k`` raise ``InvalidArgumentError`` naming ``rankings[i]``,
    ``weights``, ``min_spans`` or ``rrf_k``."""

# ---- query-embedding worker (rust/core/src/batching.rs, rust/py/src/query_encoder.rs)

__all__ += ["QueryEncoder"]

@final
class QueryEncoder:
    """Search queries embedded by a native worker thread that never takes the GIL:
    the model of ``int8_encoder`` (same arguments, same floats) behind a queue.
    ``submit`` tokenizes with ``tokenizer`` and queues; the worker embeds every query
    waiting (up to ``max_batch``) in one forward pass. ``fileno()`` is readable while
    results wait (for an event loop's ``add_reader``); ``take()`` returns them. Bad
    arguments raise ``InvalidArgumentError`` naming them (``heads``, ``max_batch``,
    ``layers[i]``, a table); a layer of the wrong shape, found by running one row
    through the layers at construction, names ``layers``."""

    def __new__(
        cls,
        tokenizer: WordPieceTokenizer,
        embeddings: _Embeddings,
        eps: float,
        heads: int,
        layers: list[_Int8Layer],
        max_batch: int = 32,
    ) -> QueryEncoder: ...
    def submit(self, tag: object, text: str) -> None:
        """Queue ``text``; ``take`` hands back ``(tag, embedding)``. Refused with
        ``ResourceExhaustedError`` after ``close``."""
    def take(self) -> list[tuple[Any, npt.NDArray[np.float32] | Exception]]:
        """Every query finished so far, in the order finished: its tag and its
        L2-normalised float32 embedding, or the ``RuntimeError`` that stopped its
        batch. Never blocks."""
    def fileno(self) -> int:
        """A descriptor that is readable while results wait for ``take``."""
    def close(self) -> None:
        """Finish the queued queries (their results stay for ``take``), then stop the
        worker thread. Idempotent."""

# ---- BERT tokenizer (rust/core/src/wordpiece/, rust/py/src/wordpiece.rs) ------

__all__ += ["WordPieceTokenizer"]

@final
class WordPieceTokenizer:
    """BERT's WordPiece tokenizer, giving the ids HF tokenizers gives for a
    ``tokenizer.json`` with a ``BertNormalizer`` (the four flags), a
    ``BertPreTokenizer`` and a ``WordPiece`` model (``vocab``, ``unk_token``,
    ``continuing_subword_prefix``, ``max_input_chars_per_word``), truncated to
    ``max_tokens``. ``added_tokens`` (content, id) are found in the raw text before
    normalisation (leftmost, then longest) and give their ids, as HF does for added
    tokens that are not normalised. ``prefix`` and ``suffix`` are the ids put around
    each text (``[CLS]`` and ``[SEP]``); a text's own tokens are cut so that the total
    is at most ``max_tokens``. Defaults are HF's. An ``unk_token`` missing from the
    vocabulary, a ``max_tokens`` below the special tokens' count or malformed
    arguments raise ``InvalidArgumentError`` naming the argument. Read-only: any
    thread may use it."""

    def __new__(
        cls,
        vocab: dict[str, int],
        *,
        max_tokens: int,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        strip_accents: bool = True,
        lowercase: bool = True,
        added_tokens: Sequence[tuple[str, int]] | None = None,
        prefix: Sequence[int] | None = None,
        suffix: Sequence[int] | None = None,
    ) -> WordPieceTokenizer: ...
    def encode_batch(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Token ids (int64) of every text one after another, and where each text
        starts (int64, ``len(texts) + 1``): text i is ``ids[offsets[i]:offsets[i + 1]]``.
        Anything but a sequence of str raises ``InvalidArgumentError`` naming ``texts``.
        The GIL is released while it runs."""
