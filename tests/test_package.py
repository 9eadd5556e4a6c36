"""The wheel installs one import name, `raftka`, and the SDK works from it outside the
checkout (the four folders at the repository root are mapped under raftka/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "build", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(source)],
        check=True, timeout=300, cwd=out,
    )
    (found,) = out.glob("raftka-*.whl")
    return found


def test_the_wheel_holds_raftka_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"raftka", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    for wing in ("broker", "client", "cluster", "proto"):
        assert f"raftka/{wing}/__init__.py" in names
    assert "raftka/records.py" in names
    assert "raftka/proto/raftka/v1/common.proto" in names
    # the console serves only what ships in the wheel
    for asset in ("index.html", "app.js", "style.css"):
        assert f"raftka/client/console/static/{asset}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "raftka = raftka.client.cli:main" in archive.read(entry_points).decode()


def test_the_installed_sdk_imports_outside_the_checkout(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, timeout=300,
    )
    script = (
        "import raftka, raftka.broker.server, raftka.records\n"
        "from raftka import Producer, Consumer, Admin\n"
        "print(raftka.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target))
