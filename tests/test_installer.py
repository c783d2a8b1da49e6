"""The PyInstaller build from a clean clone runs its self-test (slow: `make test-installer`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIZE_BUDGET_MB = 500


def folder_mb(path: Path) -> float:
    """Unpacked size; PyInstaller links some libraries twice by symlink, counted once (as `du` does)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.mark.slow
def test_build_from_clean_tree_and_selftest(tmp_path):
    clone = tmp_path / "herdbook"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"  # the inference dependencies only, as `make installer` uses
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", f"{clone}[desktop,installer]"], check=True)
    build = [python, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN"]
    build += ["--distpath", str(tmp_path / "dist"), "--workpath", str(tmp_path / "build"), "installer/herdbook.spec"]
    subprocess.run(build, cwd=clone, check=True)
    built = tmp_path / "dist" / "herdbook"
    assert folder_mb(built) < SIZE_BUDGET_MB
    assert not list(built.rglob("libtorch*")), "torch leaked into the inference build"
    t0 = time.perf_counter()
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    res = subprocess.run([str(built / "herdbook"), "--selftest"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("selftest OK"), res.stdout
    assert time.perf_counter() - t0 < 120


def test_one_opencv_owns_cv2():
    """ultralytics pulls opencv-python beside the pinned headless build; both write `cv2` (and the GUI build brings
    Qt plugins of its own): `make test` keeps the headless one only."""
    from importlib.metadata import distributions

    owners = sorted(
        {d.metadata["Name"].lower() for d in distributions() if any(str(f).startswith("cv2/") for f in d.files or [])}
    )
    assert owners == ["opencv-python-headless"], owners
