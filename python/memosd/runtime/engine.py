"""``ModelRuntime``: one causal LM in process: prefill, KV injection, streaming generation.

Concurrency: every call keeps its own cache; forward passes are serialised by
one lock, taken per step, so concurrent generations interleave token by token
and a long prompt never stalls another stream for more than one forward pass.
Callers run these methods in worker threads, never on an event loop.

Positions: an injected prefix of ``n`` tokens is a ``DynamicCache`` of length
``n``, so the model numbers the tokens that follow from ``n`` on, exactly as in
one prefill of the whole sequence.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memosd.errors import InvalidArgumentError
from memosd.runtime import locate, template
from memosd.runtime.fingerprint import Fingerprint
from memosd.runtime.generation import GenerationOptions, GenerationStats, TextStream
from memosd.runtime.kvcache import KvTensors, from_cache, to_cache
from memosd.runtime.template import PromptTemplate

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

StopCheck = Callable[[], str | None]
"""Returns a finish reason ("cancelled", "deadline") to stop generating, else None."""


def tokenizer_sha256(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    chat = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(f"{vocab}\0{chat}".encode()).hexdigest()


class ModelRuntime:
    def __init__(self, model: Any, tokenizer: Any, fingerprint: Fingerprint) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.template = PromptTemplate(tokenizer)
        self._lock = threading.Lock()
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos_ids, tokenizer.eos_token_id] if i is not None}

    @classmethod
    def load(cls, path: Path | None, cache_dir: Path, dtype: str = "float32") -> ModelRuntime:
        """Loads a model folder or GGUF file (None: the default SmolLM2); GGUF files are
        converted once into ``cache_dir``."""
        if dtype not in TORCH_DTYPES:
            raise InvalidArgumentError("model.dtype", f"expected one of {', '.join(TORCH_DTYPES)}")
        source = locate.resolve(path, cache_dir)
        model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=TORCH_DTYPES[dtype])
        tokenizer = AutoTokenizer.from_pretrained(source.folder)
        fingerprint = Fingerprint(
            model=source.name,
            weights_sha256=source.weights_sha256,
            dtype=dtype,
            tokenizer_sha256=tokenizer_sha256(tokenizer),
            template=template.VERSION,
        )
        return cls(model, tokenizer, fingerprint)

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, ids: Sequence[int], cache: Any) -> tuple[torch.Tensor, Any]:
        """Last-position logits and the updated cache."""
        with self._lock, torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float(), out.past_key_values

    def cache_of(self, prefix: KvTensors | None) -> Any:
        """A fresh transformers cache holding ``prefix`` (None when there is none)."""
        return None if prefix is None else to_cache(prefix, self.model.config)

    def prefill(self, ids: Sequence[int]) -> KvTensors:
        """The KV cache of ``ids`` (e.g. a context block), as two LHSD tensors."""
        if not ids:
            raise InvalidArgumentError("ids", "nothing to prefill")
        _, cache = self.forward(ids, None)
        return from_cache(cache)

    def next_logits(self, ids: Sequence[int], prefix: KvTensors | None = None) -> torch.Tensor:
        """Logits of the token after ``prefix`` + ``ids``."""
        logits, _ = self.forward(ids, self.cache_of(prefix))
        return logits

    def generate(
        self,
        ids: Sequence[int],
        prefix: KvTensors | None = None,
        options: GenerationOptions | None = None,
        should_stop: StopCheck | None = None,
        started: float | None = None,
    ) -> Generation:
        """A stream of text chunks continuing ``prefix`` + ``ids``; iterate it to run.
        ``started`` (a ``time.perf_counter()`` value) is where time to first token
        counts from; by default the first step."""
        if not ids:
            raise InvalidArgumentError("prompt", "nothing to generate from")
        return Generation(
            self, list(ids), prefix, options or GenerationOptions(), should_stop, started
        )


class Generation:
    """One streaming generation; ``stats`` is complete once iteration ends."""

    def __init__(
        self,
        runtime: ModelRuntime,
        ids: list[int],
        prefix: KvTensors | None,
        options: GenerationOptions,
        should_stop: StopCheck | None,
        started: float | None,
    ) -> None:
        self._rt = runtime
        self._ids = ids
        self._prefix = prefix
        self._options = options
        self._should_stop = should_stop or (lambda: None)
        self._started = started
        self.stats = GenerationStats(
            prefix_tokens=prefix.tokens if prefix is not None else 0, prompt_tokens=len(ids)
        )

    def _pick(self, logits: torch.Tensor, rng: torch.Generator | None) -> int:
        if rng is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self._options.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=rng))

    def __iter__(self) -> Iterator[str]:
        opts, stats = self._options, self.stats
        started = self._started if self._started is not None else time.perf_counter()
        rng = None
        if not opts.greedy:
            rng = torch.Generator()
            rng.manual_seed(opts.seed if opts.seed is not None else int(time.time_ns()))
        stream = TextStream(self._rt.tokenizer, opts.stop)
        cache = self._rt.cache_of(self._prefix)
        feed = self._ids
        stats.finish_reason = "length"
        for step in range(opts.max_new_tokens):
            reason = self._should_stop()
            if reason:
                stats.finish_reason = reason
                break
            logits, cache = self._rt.forward(feed, cache)
            token = self._pick(logits, rng)
            if step == 0:
                stats.ttft_ms = (time.perf_counter() - started) * 1000.0
            if token in self._rt.eos_ids:
                stats.finish_reason = "eos"
                break
            stats.token_ids.append(token)
            stats.generated_tokens += 1
            text = stream.push(token)
            if text:
                yield text
            if stream.stopped:
                stats.finish_reason = "stop"
                return
            feed = [token]
        tail = stream.flush()
        if tail:
            yield tail
