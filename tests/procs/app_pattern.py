"""A stand-in for the desktop app's use of the catalogue, run as a real process by the tests.

It does what the app does: one long-lived connection for the window, a second Catalogue opened and closed in
the same process (a dialog, a worker), worker threads with connections of their own, and decisions written
through the engine. It reports on stdout, one JSON object a line, and takes orders on stdin.

    python -m tests.procs.app_pattern CATALOGUE          # the reproduction of issue 10
    python -m tests.procs.app_pattern CATALOGUE workers  # long-lived connection + 2 worker threads writing
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from engine.catalogue import Catalogue


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def deleted_fds() -> list[str]:
    """Descriptors of this process whose file was unlinked under it (the lost WAL shows up here)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            out.append(target)
    return out


class WalFile:
    """The SQLite catalogue's -wal file; a PostgreSQL catalogue's write-ahead log is the server's own."""

    def __init__(self, target: str):
        self.path = None if "://" in target else Path(target + "-wal")

    def exists(self) -> bool:
        return self.path is None or self.path.exists()


def detections(cat: Catalogue) -> list[tuple[int, int]]:
    rows = cat.query("SELECT d.id AS det FROM detections d ORDER BY d.id")
    ind = cat.ensure_individual("P1", "test")
    return [(r["det"], ind) for r in rows]


def main() -> int:
    path = sys.argv[1]  # a catalogue file, or a central catalogue's URL (which has no WAL file to watch)
    mode = sys.argv[2] if len(sys.argv) > 2 else "repro"
    wal = WalFile(path)
    window = Catalogue(path)  # the window's connection, open for the whole session
    with Catalogue(path) as dialog:  # a dialog or worker opening the catalogue in the same process
        dialog.counts()
    pairs = detections(window)
    say(state="ready", wal_exists=wal.exists())
    sys.stdin.readline()  # the test runs other processes against the catalogue now
    report = {"wal_exists_before_writes": wal.exists(), "deleted_fds": deleted_fds(), "errors": []}
    written = 0
    if mode == "repro":
        for det, ind in pairs[:3]:
            try:
                window.confirm(det, ind, who="app")
                written += 1
            except Exception as exc:  # recorded, so the test can show what the user saw
                report["errors"].append(f"{type(exc).__name__}: {exc}")
    else:
        per_thread = int(sys.argv[3]) if len(sys.argv) > 3 else 30
        lock = threading.Lock()

        def worker(name: str) -> None:
            nonlocal written
            with Catalogue(path) as own:  # one connection per thread
                for i in range(per_thread):
                    det, ind = pairs[i % len(pairs)]
                    try:
                        own.confirm(det, ind, who=name)
                        with lock:
                            written += 1
                    except Exception as exc:
                        report["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                    if not wal.exists():
                        report["errors"].append(f"{name}: WAL missing under the live connection")

        threads = [threading.Thread(target=worker, args=(f"worker{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for i in range(per_thread):  # the window keeps deciding meanwhile
            det, ind = pairs[i % len(pairs)]
            try:
                window.confirm(det, ind, who="window")
                written += 1
            except Exception as exc:
                report["errors"].append(f"window: {type(exc).__name__}: {exc}")
            window.counts()
        for t in threads:
            t.join()
    report["wal_exists_after_writes"] = wal.exists()
    report["deleted_fds_after"] = deleted_fds()
    report["written"] = written
    window.close()
    say(state="done", **report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
