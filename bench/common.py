"""What the benchmark scripts share: running a measurement in a fresh child process (its peak RSS is its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` with ``python -c`` in the repository root; its last stdout line is a JSON object."""
    res = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])
