"""A BERT sentence encoder in NumPy: the forward pass of a sentence-transformers
BERT model (token embeddings, post-norm encoder layers, mean pooling, L2 norm)
over the model directory's ``model.safetensors`` and ``tokenizer.json``.

Why not torch: the daemon embeds every memory and every query, and a daemon
with no language model configured must not pay for importing torch (seconds
of start-up, hundreds of MiB resident). A six-layer MiniLM is a handful of
small matrix products per token; NumPy's BLAS runs them as fast as torch does
on a CPU. ``tests/test_bert.py`` holds the outputs to sentence-transformers'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from memosd.errors import FailedPreconditionError
from memosd.tokenizer import BatchTokenizer, load_tokenizer

if TYPE_CHECKING:
    from memosd._native import QueryEncoder

_QKV = ("query", "key", "value")


class _Linear(Protocol):
    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class _DenseF32:
    """``x @ w + b`` in float32 through NumPy's BLAS, then GELU if ``gelu``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, *, gelu: bool = False) -> None:
        # Stored (out, in) like torch's Linear; kept (in, out) so x @ w needs no transpose.
        self.w = np.ascontiguousarray(weight.T, dtype=np.float32)
        self.b = bias
        self.gelu = gelu

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.w + self.b
        return _gelu(y) if self.gelu else y


def _dense_int8(weight: np.ndarray, bias: np.ndarray, *, gelu: bool = False) -> _Linear:
    """The same product with int8 weights and per-row int8 activations (memosd._native);
    GELU runs in the product's epilogue."""
    from memosd._native import Int8Linear

    weight = np.ascontiguousarray(weight, dtype=np.float32)
    return Int8Linear(weight, bias, activation="gelu" if gelu else None)


@dataclass(frozen=True)
class _Layer:
    qkv: _Linear  # hidden -> 3*hidden: query, key and value projections side by side
    out: _Linear
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    up: _Linear  # hidden -> intermediate, GELU applied
    down: _Linear
    ln2_g: np.ndarray
    ln2_b: np.ndarray


class BertEncoder:
    """Mean-pooled, L2-normalised sentence embeddings, float32 (n, hidden).

    ``quantize`` runs the four big products of each layer (fused QKV, attention
    output, FFN up and down) in int8 (``memosd._native.Int8Linear``: weights per
    output feature, activations per token row, so a text's vector does not depend
    on the rest of its batch), and GELU (the same function as in float32) runs in the
    FFN-up product's epilogue. Attention and layer norms run in float32 in
    ``memosd._native`` over the unpadded batch.
    """

    def __init__(
        self, model_dir: str | Path, *, quantize: bool = False, like: BertEncoder | None = None
    ) -> None:
        """``like``: an encoder of the same model; this one shares its embedding tables
        (read-only; 47 MB for MiniLM) instead of holding a second copy, and its native
        tokenizer (read-only, so any thread may use it)."""
        from safetensors.numpy import load_file

        from memosd._native import WordPieceTokenizer

        model_dir = Path(model_dir)
        try:
            config = json.loads((model_dir / "config.json").read_text())
            weights = load_file(str(model_dir / "model.safetensors"))
        except (OSError, ValueError) as e:
            raise FailedPreconditionError(f"cannot load the embedder at {model_dir}: {e}") from e
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise FailedPreconditionError(
                f"{model_dir}: expected a BERT model with gelu activations, got "
                f"model_type={config.get('model_type')!r} hidden_act={config.get('hidden_act')!r}"
            )
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = _max_seq_length(model_dir, config)
        self._tokenizer: BatchTokenizer
        if like is not None and isinstance(like._tokenizer, WordPieceTokenizer):
            self._tokenizer = like._tokenizer
        else:
            self._tokenizer = load_tokenizer(model_dir / "tokenizer.json", self.max_tokens)

        def b(name: str) -> np.ndarray:
            return weights[name].astype(np.float32)

        self.quantize = quantize
        dense = _dense_int8 if quantize else _DenseF32
        self.int8_kernel: str | None = None  # which native kernel runs the int8 products

        def linear(prefixes: list[str], gelu: bool = False) -> _Linear:
            """One product over the listed Linear layers' outputs, side by side."""
            weight = np.concatenate([weights[p + ".weight"] for p in prefixes], axis=0)
            bias = np.concatenate([b(p + ".bias") for p in prefixes])
            return dense(weight.astype(np.float32), bias, gelu=gelu)

        self._word: np.ndarray
        self._position: np.ndarray
        self._token_type: np.ndarray
        self._ln_g: np.ndarray
        self._ln_b: np.ndarray
        if like is not None:
            self._word, self._position = like._word, like._position
            self._token_type, self._ln_g, self._ln_b = like._token_type, like._ln_g, like._ln_b
        else:
            emb = "embeddings."
            self._word = b(emb + "word_embeddings.weight")
            self._position = b(emb + "position_embeddings.weight")
            self._token_type = b(emb + "token_type_embeddings.weight")[0]
            self._ln_g, self._ln_b = b(emb + "LayerNorm.weight"), b(emb + "LayerNorm.bias")
        self._layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            self._layers.append(
                _Layer(
                    qkv=linear([a + f"self.{n}" for n in _QKV]),
                    out=linear([a + "output.dense"]),
                    ln1_g=b(a + "output.LayerNorm.weight"),
                    ln1_b=b(a + "output.LayerNorm.bias"),
                    up=linear([p + "intermediate.dense"], gelu=True),
                    down=linear([p + "output.dense"]),
                    ln2_g=b(p + "output.LayerNorm.weight"),
                    ln2_b=b(p + "output.LayerNorm.bias"),
                )
            )
        self._int8_layers: list[tuple] = []  # the layers as int8_encoder takes them
        if quantize:
            self.int8_kernel = self._layers[0].qkv.kernel  # type: ignore[attr-defined]
            self._int8_layers = [
                (t.qkv, t.out, t.ln1_g, t.ln1_b, t.up, t.down, t.ln2_g, t.ln2_b)
                for t in self._layers
            ]

    @property
    def precision(self) -> str:
        return f"int8 ({self.int8_kernel})" if self.quantize else "float32"

    def native_query_encoder(self, max_batch: int) -> QueryEncoder | None:
        """This model behind a native worker thread (``memosd._native.QueryEncoder``):
        the int8 model with the native tokenizer only; None otherwise."""
        from memosd._native import QueryEncoder, WordPieceTokenizer

        if not self.quantize or not isinstance(self._tokenizer, WordPieceTokenizer):
            return None
        tables = (self._word, self._position, self._token_type, self._ln_g, self._ln_b)
        return QueryEncoder(
            self._tokenizer, tables, self.eps, self.heads, self._int8_layers, max_batch
        )

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of every text one after another, and where each text starts:
        text i is ``ids[offsets[i]:offsets[i + 1]]``."""
        return self._tokenizer.encode_batch(texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        from memosd._native import add_layer_norm, attention, embed_tokens, int8_encoder, mean_pool

        ids, offsets = self.tokenize(texts)
        # Tokens of all texts as rows of one matrix, unpadded: one product per weight
        # for the whole batch, and attention (in memosd._native) keeps each text to
        # its own rows.
        tables = (self._word, self._position, self._token_type, self._ln_g, self._ln_b)
        if self.quantize:
            # Every product is native: the whole encoder runs in one call, without
            # holding the GIL, so other threads (the daemon's gRPC loop) go on.
            return int8_encoder(ids, offsets, tables, self.eps, self.heads, self._int8_layers)
        x = embed_tokens(ids, offsets, *tables, self.eps)
        for layer in self._layers:
            context = attention(layer.qkv(x), offsets, self.heads)
            h = layer.out(context)
            add_layer_norm(h, x, layer.ln1_g, layer.ln1_b, self.eps)
            x = layer.down(layer.up(h))
            add_layer_norm(x, h, layer.ln2_g, layer.ln2_b, self.eps)
        return mean_pool(x, offsets)


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU that BERT uses, in place on the fresh product ``x``."""
    from memosd._native import gelu_in_place

    gelu_in_place(x)
    return x


def _max_seq_length(model_dir: Path, config: dict) -> int:
    """sentence-transformers' max_seq_length, capped by the position table."""
    limit = int(config.get("max_position_embeddings", 512))
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        return min(limit, int(json.loads(st_config.read_text()).get("max_seq_length", limit)))
    return limit
