"""Packaging: the wheel carries the compiled core (or not, with SKIP_CYTHON), the .pxd and the DBCs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def build_wheel(tmp_path: Path, **env: str) -> zipfile.ZipFile:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__")
    )
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True, env={**os.environ, **env}, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("bmsgw-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.parametrize("skip", [False, True], ids=["compiled", "SKIP_CYTHON"])
def test_wheel_contents(tmp_path: Path, skip: bool) -> None:
    names = build_wheel(tmp_path, **({"SKIP_CYTHON": "1"} if skip else {"REQUIRE_CYTHON": "1"})).namelist()
    for module in ("_kernel", "_health"):
        so = [n for n in names if n.startswith(f"bmsgw/core/{module}") and n.endswith(".so")]
        assert bool(so) is not skip, module
        assert f"bmsgw/core/{module}.py" in names  # the single source of truth ships either way
        assert f"bmsgw/core/{module}.pxd" in names
    assert "bmsgw/dbc/pack.dbc" in names
    assert "bmsgw/dbc/pylontech_lv.dbc" in names
    for asset in ("index.html", "app.js", "style.css"):  # the dashboard, shipped as package data
        assert f"bmsgw/telemetry/web/{asset}" in names
    assert not [n for n in names if n.endswith(".c")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    exe = shutil.which("bmsgw") or str(Path(sys.executable).with_name("bmsgw"))
    assert Path(exe).exists()
    unit = (ROOT / "systemd" / "bmsgw.service").read_text().replace("/usr/local/bin/bmsgw", exe)
    path = tmp_path / "bmsgw.service"
    path.write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
