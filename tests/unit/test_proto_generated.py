"""The committed generated code matches the .proto (run `make proto` after editing it)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("hybrid_assistant/v1/assistant.proto")


def test_generated_code_is_current(tmp_path: Path) -> None:
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / "proto" / PROTO, tmp_path / PROTO)
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    assert protoc.main([*args, f"--pyi_out={tmp_path}", str(tmp_path / PROTO)]) == 0
    for name in ("assistant_pb2.py", "assistant_pb2.pyi", "assistant_pb2_grpc.py"):
        generated = tmp_path / PROTO.parent / name
        committed = ROOT / "proto" / PROTO.parent / name
        assert filecmp.cmp(generated, committed, shallow=False), f"{name} is stale: run `make proto`"
