"""Desktop responsiveness: key press to next suggestion drawn (median ms) on the demo catalogue, and the longest
UI-thread stall while importing nyala/train through the Import dialog. Prints a table, writes JSON.

Usage: QT_QPA_PLATFORM=offscreen python bench/desktop.py [--catalogue demo-catalogue/demo.sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from desktop.dialogs import ImportDialog  # noqa: E402
from desktop.heartbeat import StallMeter  # noqa: E402
from desktop.review import ReviewWidget  # noqa: E402
from engine.catalogue import Catalogue  # noqa: E402
from engine.demo import find_data_dir  # noqa: E402


def key_to_next(catalogue: Path, presses: int = 40) -> dict:
    cat = Catalogue(catalogue)
    widget = ReviewWidget(cat, who="bench")
    widget.show()
    QApplication.processEvents()
    times = []
    for i in range(presses):
        if widget.current() is None:
            break
        key = Qt.Key.Key_S if i % 2 else Qt.Key.Key_R  # alternate: record a decision, move on
        t0 = time.perf_counter()
        QTest.keyClick(widget, key)
        widget.repaint()  # until the next suggestion is on screen
        QApplication.processEvents()
        times.append((time.perf_counter() - t0) * 1000)
    # leave the demo as it was: undo this run's decisions
    while cat.db.execute("SELECT 1 FROM effective_assignments WHERE who = 'bench'").fetchone():
        cat.undo_last("bench")
    widget.close()
    widget.deleteLater()
    QApplication.processEvents()
    cat.close()
    return {"presses": len(times), "median_ms": statistics.median(times), "max_ms": max(times)}


def import_stall(folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        dialog = ImportDialog(Path(tmp) / "c.sqlite")
        dialog.show()
        loop = QEventLoop()
        dialog.done.connect(lambda _r: loop.quit())
        t0 = time.perf_counter()
        with StallMeter(10) as meter:
            dialog.start(str(folder))
            loop.exec()
        result = dialog.result
        dialog.close()
        dialog.deleteLater()
        QApplication.processEvents()
        return {
            "photos": result["ingest"].files_seen,
            "seconds": time.perf_counter() - t0,
            "longest_stall_ms": meter.longest_ms,
            "heartbeats": len(meter.gaps),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", default=str(ROOT / "demo-catalogue" / "demo.sqlite"))
    args = parser.parse_args()
    QApplication.instance() or QApplication([])
    out = {
        "key_to_next_suggestion": key_to_next(Path(args.catalogue)),
        "import_nyala_train": import_stall(find_data_dir(ROOT) / "nyala" / "train"),
    }
    print(json.dumps(out, indent=2))
    path = ROOT / "bench" / "results" / "desktop.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
