"""The catalogue under the app's real pattern of use, with real processes (issue 10).

The defect: ``Catalogue.__init__`` read the file header with a plain ``open()``; closing that descriptor
dropped every POSIX lock the process held on the database, so a second process (``herdbook info``) believed
it was the last connection, checkpointed and deleted the WAL under the open app, and the app's next writes
failed ("disk I/O error") or were lost. These tests run the app's pattern in a child process while other
processes read and write, and then kill the app's own writes at 20 points with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.catalogue import Catalogue

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def small_catalogue(decision_catalogue) -> Path:
    with Catalogue(decision_catalogue) as cat:
        cat.ensure_individual("P1", "test")
    return decision_catalogue


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def herdbook(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "herdbook", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def integrity(target) -> str:
    """SQLite's integrity_check; a PostgreSQL server checks its own pages ('ok' when the catalogue opens)."""
    with Catalogue(target, create=False) as cat:
        if cat.dialect == "postgresql":
            return "ok"
        return cat.db.execute("PRAGMA integrity_check").fetchone()[0]


def test_another_process_reading_never_deletes_the_open_apps_wal(small_catalogue):
    """The issue's reproduction: app open (+ a second Catalogue opened and closed in its process), then
    `herdbook info` from a terminal, then three confirmations. Before the fix the WAL was gone and the
    confirmations failed with 'disk I/O error'."""
    if "://" in str(small_catalogue):
        pytest.skip("an SQLite file's WAL: a PostgreSQL server keeps its own")
    app = child("tests.procs.app_pattern", str(small_catalogue))
    assert json.loads(app.stdout.readline())["state"] == "ready"
    info = herdbook("--catalogue", small_catalogue, "info")
    assert info.returncode == 0, info.stderr
    out, err = app.communicate("go\n", timeout=120)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["wal_exists_before_writes"], "the WAL was deleted under the live connection"
    assert not [f for f in report["deleted_fds"] if "app.sqlite" in f], report["deleted_fds"]
    assert report["errors"] == [] and report["written"] == 3, report
    with Catalogue(small_catalogue, create=False) as cat:
        assert cat.db.execute("SELECT count(*) FROM assignments WHERE who = 'app'").fetchone()[0] == 3
    assert integrity(small_catalogue) == "ok"


def test_app_workers_and_other_processes_all_writes_land(small_catalogue):
    """Long-lived window connection + two worker threads (own connections) writing in the app's process,
    while two other processes write decisions and a third reads, repeatedly (on a catalogue file, and on a
    central PostgreSQL catalogue: five clients at once, no decision lost)."""
    per = 30
    app = child("tests.procs.app_pattern", str(small_catalogue), "workers", str(per))
    assert json.loads(app.stdout.readline())["state"] == "ready"
    writers = [child("tests.procs.writer", str(small_catalogue), str(per), f"cli{i}") for i in range(2)]
    app.stdin.write("go\n")
    app.stdin.flush()
    readers = [herdbook("--catalogue", small_catalogue, "info") for _ in range(3)]
    assert all(r.returncode == 0 for r in readers), [r.stderr for r in readers]
    for w in writers:
        out, err = w.communicate(timeout=180)
        assert w.returncode == 0, err
        assert out.split()[-1] == str(per)
    out, err = app.communicate(timeout=180)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["errors"] == [], report["errors"]
    assert report["wal_exists_before_writes"] and report["wal_exists_after_writes"]
    assert not [f for f in report["deleted_fds_after"] if "app.sqlite" in f]
    with Catalogue(small_catalogue, create=False) as cat:
        by_who = dict(cat.db.execute("SELECT who, count(*) FROM assignments GROUP BY who").fetchall())
    assert by_who == {"window": per, "worker0": per, "worker1": per, "cli0": per, "cli1": per}
    assert integrity(small_catalogue) == "ok"


SWEEP_POINTS = 20


def test_sigkill_sweep_of_the_apps_writes(small_catalogue, tmp_path, request):
    """The app's own writes (confirm, reject, new individual, merge, undo, species, manual box) killed with
    SIGKILL after the k-th acknowledged write, for 20 values of k: every acknowledged write is there, nothing
    is half-written, the file passes integrity_check and takes a new write. On PostgreSQL each round starts
    from a copy of the database (CREATE DATABASE ... TEMPLATE)."""
    server = request.getfixturevalue("postgres_server") if "://" in str(small_catalogue) else None
    template = None if server else small_catalogue.read_bytes()
    survived = 0
    for k in range(1, SWEEP_POINTS + 1):
        if server:
            path = server.copy_database(small_catalogue)
        else:
            path = tmp_path / f"kill{k}.sqlite"
            path.write_bytes(template)
        proc = child("tests.procs.app_writes", str(path))
        acked = 0
        for line in proc.stdout:
            acked = int(line.split()[1])
            if acked >= k:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
        assert acked >= k, proc.stderr.read()
        assert integrity(path) == "ok"
        with Catalogue(path, create=False) as cat:
            log = cat.query("SELECT note FROM assignments WHERE note LIKE 'step %' ORDER BY id")
            steps = [int(r["note"].split()[1]) for r in log]
            # Acknowledged steps are all there, in order, each once (a step's rows commit together).
            assert steps[:acked] == list(range(1, acked + 1)), steps
            orphans = cat.db.execute(
                "SELECT count(*) FROM individuals i WHERE i.code LIKE 'K%' AND NOT EXISTS "
                "(SELECT 1 FROM assignments a WHERE a.individual_id = i.id)"
            ).fetchone()[0]
            assert orphans == 0, "a new individual without its confirmation: half a decision was written"
            cat.confirm(1, cat.ensure_individual("after", "test"), who="after-kill")
        survived += 1
    assert survived == SWEEP_POINTS
