"""Model fingerprints: what a KV cache is valid for.

A KV cache only means something to the exact model that computed it: the same
weights, compute dtype, tokenizer and context template, and (for parametric
memory) the same adapter. Activations record the fingerprint they were built
with; using one with a different runtime is refused, naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from memosd.errors import CorruptDataError

METADATA_PREFIX = "fingerprint."


@dataclass(frozen=True)
class Fingerprint:
    model: str
    """A readable model name (the GGUF file or folder name); informative only."""
    weights_sha256: str
    """Hash of the weight files: the model's identity."""
    dtype: str
    """Compute dtype of the model, which is also the dtype of its KV cache."""
    tokenizer_sha256: str
    template: str
    """Version of the context-block template (``memosd.runtime.template``)."""
    adapter: str = ""
    """Id of the LoRA adapter applied on top of the base model; empty for none."""

    def with_adapter(self, adapter: str) -> Fingerprint:
        return dataclasses.replace(self, adapter=adapter)

    def differences(self, other: Fingerprint) -> list[str]:
        """Readable differences, ``self`` being what was recorded and ``other`` what is
        loaded now; empty when they match. The informative model name is not compared."""
        out = []
        for f in dataclasses.fields(self):
            if f.name == "model":
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                out.append(f"{f.name}: built for {_short(mine)}, loaded {_short(theirs)}")
        return out

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_PREFIX + k: str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Fingerprint:
        values = {}
        for f in dataclasses.fields(cls):
            key = METADATA_PREFIX + f.name
            if key not in metadata:
                if f.default is not dataclasses.MISSING:
                    continue
                raise CorruptDataError(f"activation metadata lacks {key}")
            values[f.name] = metadata[key]
        return cls(**values)


def _short(value: str) -> str:
    if not value:
        return "(none)"
    return value[:12] if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else value


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
