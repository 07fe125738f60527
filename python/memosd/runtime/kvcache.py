"""KV tensors: out of a transformers cache, into pages, back, and into a cache again.

A model's cache is held as two tensors, keys and values, each ``[layers,
kv_heads, tokens, head_dim]`` (layout ``"LHSD"``), in the model's dtype. Pages
are packed and unpacked by the Rust core (``memosd._native``); numpy is the
bridge, bfloat16 travelling as uint16 bits since numpy has no bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from memosd._native import KvPagePool, kv_pack, kv_unpack

LAYOUT = "LHSD"
DTYPES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
}


@dataclass(frozen=True)
class KvTensors:
    keys: torch.Tensor
    values: torch.Tensor

    @property
    def tokens(self) -> int:
        return int(self.keys.shape[2])

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()

    def prefix(self, tokens: int) -> KvTensors:
        """The first ``tokens`` positions."""
        return KvTensors(self.keys[:, :, :tokens], self.values[:, :, :tokens])


def from_cache(cache: Any) -> KvTensors:
    """Stacks the per-layer ``[1, heads, tokens, dim]`` tensors of a DynamicCache."""
    layers = cache.layers
    keys = torch.stack([layer.keys[0] for layer in layers])
    values = torch.stack([layer.values[0] for layer in layers])
    return KvTensors(keys, values)


def to_cache(kv: KvTensors, config: Any) -> DynamicCache:
    """A fresh DynamicCache holding ``kv`` (it copies, so ``kv`` is never changed by
    generation appending to the cache)."""
    pairs = [(kv.keys[i].unsqueeze(0), kv.values[i].unsqueeze(0)) for i in range(kv.keys.shape[0])]
    return DynamicCache(pairs, config=config)


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"KV caches of {dtype} cannot be packed") from None


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.uint16)
    return t.numpy()


def _from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def pack(
    kv: KvTensors, tokens_per_page: int, encoding: str = "raw", sequence_id: int = 0
) -> list[bytes]:
    """Packs into page bytes (f32/f16/bf16 as they are, or int8)."""
    options = _pack_options(kv, tokens_per_page, encoding, sequence_id)
    return kv_pack(_to_numpy(kv.keys), _to_numpy(kv.values), **options)


def pack_into_pool(
    pool: KvPagePool,
    prefix: str,
    kv: KvTensors,
    tokens_per_page: int,
    encoding: str = "raw",
    sequence_id: int = 0,
) -> list[str]:
    """Packs straight into ``pool``; returns the page keys."""
    options = _pack_options(kv, tokens_per_page, encoding, sequence_id)
    return pool.pack(prefix, _to_numpy(kv.keys), _to_numpy(kv.values), **options)


def _pack_options(
    kv: KvTensors, tokens_per_page: int, encoding: str, sequence_id: int
) -> dict[str, Any]:
    """The keyword arguments both packers take."""
    return {
        "layout": LAYOUT,
        "dtype": dtype_name(kv.keys.dtype),
        "shape": tuple(kv.keys.shape),
        "tokens_per_page": tokens_per_page,
        "encoding": encoding,
        "sequence_id": sequence_id,
    }


def _tensors(arrays: tuple[np.ndarray, np.ndarray], dtype: torch.dtype) -> KvTensors:
    keys, values = (_from_numpy(a, dtype) for a in arrays)
    return KvTensors(keys, values)


def unpack(pages: Sequence[bytes], dtype: torch.dtype) -> KvTensors:
    """Unpacks page bytes; ``dtype`` is the torch dtype the pages hold."""
    return _tensors(kv_unpack(list(pages), LAYOUT), dtype)


def unpack_from_pool(pool: KvPagePool, keys: Sequence[str], dtype: torch.dtype) -> KvTensors:
    """Unpacks pages held by (or spilled from) ``pool``."""
    return _tensors(pool.unpack(list(keys), LAYOUT), dtype)
