"""The committed generated code in python/memosd/v1 matches what proto/ generates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "python" / "memosd" / "v1"


def _generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    _generator().generate(tmp_path)
    fresh = _files(tmp_path / "memosd" / "v1")
    committed = _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit python/memosd/v1"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit them"


def test_every_rpc_has_its_own_request_and_response() -> None:
    from memosd.v1 import admin_service_pb2, cube_service_pb2, memory_service_pb2

    for module in (cube_service_pb2, memory_service_pb2, admin_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
