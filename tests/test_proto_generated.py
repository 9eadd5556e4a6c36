"""The committed protobuf/gRPC code must be exactly what `python -m raftka.proto.generate` makes."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from raftka.proto.generate import REPO_ROOT, generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    shutil.copytree(
        REPO_ROOT / "proto",
        tmp_path / "proto",
        ignore=shutil.ignore_patterns("*_pb2*.py*", "__pycache__"),
    )
    generate(tmp_path)
    generated = sorted((tmp_path / "proto" / "raftka" / "v1").glob("*_pb2*.py*"))
    committed = sorted((REPO_ROOT / "proto" / "raftka" / "v1").glob("*_pb2*.py*"))
    assert [p.name for p in generated] == [p.name for p in committed]
    stale = [
        p.name
        for p in generated
        if not filecmp.cmp(p, REPO_ROOT / "proto" / "raftka" / "v1" / p.name, shallow=False)
    ]
    assert not stale, f"run `python -m raftka.proto.generate`: stale generated files {stale}"
