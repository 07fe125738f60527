"""Generate the Python code of the memosd v1 API from proto/ into python/memosd/v1/.

    python proto/generate.py [--out DIR]

DIR is the root of the Python package tree (default: python/). The generated
modules are committed; tests/test_proto.py regenerates them into a temporary
directory and fails when they drift from proto/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE = Path("memosd") / "v1"
INIT = '"""Generated gRPC code of the memosd v1 API (see proto/generate.py)."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Write the generated package under ``out_root/memosd/v1``; returns the files written."""
    from grpc_tools import protoc  # a build-time dependency only

    plugin_dir = Path(sys.executable).parent
    target = out_root / PACKAGE
    # Build in a scratch directory so that a failed run leaves the old code intact.
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--mypy_out={scratch}",
            f"--mypy_grpc_out={scratch}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = Path(scratch) / PACKAGE
        (generated / "__init__.py").write_text(INIT)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target)
    return sorted(p for p in target.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "python")
    written = generate(parser.parse_args().out)
    print(f"generated {len(written)} files under {parser.parse_args().out / PACKAGE}")


if __name__ == "__main__":
    main()
