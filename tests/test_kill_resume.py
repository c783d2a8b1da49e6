"""An import killed with SIGKILL at any moment, then run again, ends with the catalogue of one clean run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from engine.catalogue import Catalogue

# Columns that record when something happened, which differ between any two runs.
VOLATILE = {"started_at", "finished_at", "created_at", "at", "applied_at"}
TABLES = ["imports", "deployments", "media", "media_files", "detections", "individuals", "assignments"]


def snapshot(path) -> dict:
    with Catalogue(path, create=False) as cat:
        out = {}
        for table in TABLES:
            rows = cat.query(f"SELECT * FROM {table} ORDER BY rowid")
            out[table] = [{k: v for k, v in r.items() if k not in VOLATILE and k != "mtime_ns"} for r in rows]
        return out


def run_import(catalogue, folder) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "herdbook",
        "--catalogue",
        str(catalogue),
        "import",
        str(folder),
        "--batch-size",
        "8",
        "--only-ingest",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def media_count(path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM media").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_sigkill_then_resume_equals_one_clean_run(tmp_path, data_dir):
    clean, killed = tmp_path / "clean.sqlite", tmp_path / "killed.sqlite"
    assert run_import(clean, data_dir).wait(timeout=300) == 0

    proc = run_import(killed, data_dir)
    deadline = time.time() + 120
    while media_count(killed) < 300 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "import finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = media_count(killed)
    total = snapshot(clean)
    assert 0 < partial < len(total["media"])

    resumed = run_import(killed, data_dir)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert snapshot(killed) == total
    assert b"already in catalogue" in out
