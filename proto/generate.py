"""Regenerate the Python code for proto/raftka/v1/*.proto.

The only way stubs are produced, so generated files always match one grpcio-tools run;
tests/test_proto_generated.py fails when a .proto changed without running this.
Usage: python -m raftka.proto.generate

The .proto files import each other as "proto/raftka/v1/...", so protoc writes imports of
`proto.raftka.v1`; the package is installed as `raftka.proto`, so those lines are rewritten
to `raftka.proto.raftka.v1` (the descriptors keep their file names, which other languages'
clients load the .proto files by).
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = pathlib.Path("proto") / "raftka" / "v1"


def proto_files(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / PROTO_DIR).glob("*.proto"))


def generate(out_dir: pathlib.Path = REPO_ROOT) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under out_dir (which
    holds a copy of proto/ when checking for staleness)."""
    import os

    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        "-I.",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(out_dir),
    ]
    previous = os.getcwd()
    os.chdir(out_dir)  # protoc records paths relative to the include root
    try:
        code = protoc.main(args)
    finally:
        os.chdir(previous)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for path in (out_dir / PROTO_DIR).glob("*_pb2*.py*"):
        text = path.read_text()
        fixed = text.replace(_GENERATED_IMPORT, _PACKAGE_IMPORT)
        if fixed != text:
            path.write_text(fixed)


_GENERATED_IMPORT = "from proto.raftka.v1 import "
_PACKAGE_IMPORT = "from raftka.proto.raftka.v1 import "


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT)
