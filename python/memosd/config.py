"""Daemon configuration: defaults, a TOML file, MEMOSD_* environment variables, flags.

Later sources override earlier ones in that order. Every setting is a field of
a section dataclass below; its environment variable is ``MEMOSD_`` followed by
the section and the field in upper case (``MEMOSD_LIMITS_MAX_BATCH_SIZE``), or
for top-level settings just the field (``MEMOSD_LISTEN``). docs/config.md
documents each one (a test checks that none is missing).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from memosd.errors import InvalidArgumentError

ENV_PREFIX = "MEMOSD_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/memosd, i.e. ~/.local/share/memosd by default."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "memosd"


@dataclass
class LimitsConfig:
    max_content_bytes: int = 64 * 1024
    max_batch_size: int = 1000
    max_page_size: int = 1000
    max_top_k: int = 1000
    max_tags: int = 64
    max_tag_bytes: int = 256
    max_metadata_entries: int = 64
    max_metadata_bytes: int = 4096
    max_query_bytes: int = 8 * 1024
    max_message_bytes: int = 64 * 1024 * 1024
    max_pending_searches: int = 1024


@dataclass
class StoreConfig:
    initial_map_mib: int = 1024


@dataclass
class SearchConfig:
    snapshot_interval_seconds: float = 300.0


@dataclass
class EmbedderConfig:
    batch_size: int = 64
    preload: bool = True
    quantize: bool = False
    quantize_queries: bool = True


@dataclass
class LifecycleConfig:
    sweep_interval_seconds: float = 30.0
    sweep_batch: int = 1000
    access_flush_interval_seconds: float = 10.0


@dataclass
class ServerConfig:
    max_workers: int = 8
    grace_seconds: float = 10.0


@dataclass
class ModelConfig:
    """The hosted model (activation memory; parametric memory later)."""

    enabled: bool = True
    path: str = ""
    dtype: str = "float32"
    preload: bool = False
    threads: int = 0
    tokens_per_page: int = 256
    int8: bool = False
    pool_budget_mib: int = 512
    stale: str = "rebuild"


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = "127.0.0.1:50051"
    log_level: str = "INFO"
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the TOML file at ``path``, then ``env``, then ``overrides``
    (dotted names such as ``"listen"`` or ``"limits.max_batch_size"``)."""
    config = Config()
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except OSError as exc:
            raise InvalidArgumentError("config", f"cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgumentError("config", f"{path} is not valid TOML: {exc}") from exc
        _apply_document(config, document, "")
    environ = os.environ if env is None else env
    for name, (section, attr) in settings().items():
        env_name = ENV_PREFIX + name.replace(".", "_").upper()
        if env_name in environ:
            _set(config, section, attr, environ[env_name], env_name)
    for name, value in (overrides or {}).items():
        if value is not None:
            section, attr = settings()[name]
            _set(config, section, attr, value, name)
    config.data_dir = Path(config.data_dir).expanduser()
    if config.log_level.upper() not in LOG_LEVELS:
        raise InvalidArgumentError("log_level", f"expected one of {', '.join(LOG_LEVELS)}")
    if config.listen.rpartition(":")[0] == "" or not config.listen.rpartition(":")[2].isdigit():
        raise InvalidArgumentError("listen", f"expected HOST:PORT, got {config.listen!r}")
    return config


def settings() -> dict[str, tuple[str, str]]:
    """Every setting's dotted name -> (section, field); section "" is the top level."""
    found: dict[str, tuple[str, str]] = {}
    for top in dataclasses.fields(Config):
        kind = get_type_hints(Config)[top.name]
        if dataclasses.is_dataclass(kind):
            for sub in dataclasses.fields(kind):
                found[f"{top.name}.{sub.name}"] = (top.name, sub.name)
        else:
            found[top.name] = ("", top.name)
    return found


def _apply_document(config: Config, document: Mapping[str, Any], prefix: str) -> None:
    known = settings()
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if not any(n.startswith(name + ".") for n in known):
                raise InvalidArgumentError(name, "unknown config section")
            _apply_document(config, value, name + ".")
        elif name in known:
            section, attr = known[name]
            _set(config, section, attr, value, name)
        else:
            raise InvalidArgumentError(name, "unknown config setting")


def _set(config: Config, section: str, attr: str, value: Any, source: str) -> None:
    target = getattr(config, section) if section else config
    kind = get_type_hints(type(target))[attr]
    setattr(target, attr, _coerce(kind, value, source))


def _coerce(kind: Any, value: Any, source: str) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(k for k in kind.__args__ if k is not type(None))
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if kind is int and isinstance(value, float):
            raise ValueError(value)
        coerced = kind(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(source, f"expected {kind.__name__}, got {value!r}") from exc
    if isinstance(coerced, int | float) and not isinstance(coerced, bool) and coerced < 0:
        raise InvalidArgumentError(source, "must not be negative")
    return coerced
