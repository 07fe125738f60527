"""The manifest of a search-index snapshot: which files hold which cube's graph, at which seq.

Snapshot files are never overwritten: a new snapshot writes new files, then
replaces ``manifest.json`` atomically (write, fsync, rename), then deletes the
files the new manifest no longer names. A crash at any point leaves either the
old or the new snapshot complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from memosd.errors import CorruptDataError

FORMAT = 1
NAME = "manifest.json"


@dataclass
class Manifest:
    seq: int
    dim: int
    cubes: dict[str, str] = field(default_factory=dict)  # cube id -> file stem


def read(directory: Path) -> Manifest | None:
    """The manifest in ``directory``; None if there is none; CorruptDataError if unreadable."""
    path = directory / NAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptDataError(f"{path}: {e}") from e
    try:
        data = json.loads(raw)
        if data["format"] != FORMAT:
            raise CorruptDataError(f"{path}: unknown format {data['format']!r}")
        cubes = data["cubes"]
        if not isinstance(cubes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "/" not in v for k, v in cubes.items()
        ):
            raise CorruptDataError(f"{path}: bad cube table")
        return Manifest(seq=int(data["seq"]), dim=int(data["dim"]), cubes=cubes)
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptDataError(f"{path}: {e}") from e


def write(directory: Path, manifest: Manifest) -> None:
    """Atomically replace the manifest, then delete files it does not name."""
    path = directory / NAME
    tmp = directory / (NAME + ".tmp")
    body = {"format": FORMAT, "seq": manifest.seq, "dim": manifest.dim, "cubes": manifest.cubes}
    with open(tmp, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    keep = set(manifest.cubes.values())
    for p in directory.iterdir():
        if p.name != NAME and p.name.split(".", 1)[0] not in keep:
            p.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
