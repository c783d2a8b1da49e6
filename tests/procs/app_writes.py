"""The app's own writes, in the order a review session makes them, each acknowledged once committed.

    python -m tests.procs.app_writes CATALOGUE
Each decision carries 'step N' in its note so a test can check which steps landed.
"""

from __future__ import annotations

import sys

from engine import decisions
from engine.catalogue import Catalogue


def main() -> int:
    path = sys.argv[1]
    with Catalogue(path, create=False) as cat:
        dets = [r["id"] for r in cat.query("SELECT id FROM detections ORDER BY id")]
        p1 = cat.ensure_individual("P1", "test")
        step = 0
        for round_ in range(100):
            det = dets[round_ % len(dets)]
            for kind in ("confirm", "reject", "new", "box", "undo", "merge"):
                step += 1
                note = f"step {step}"
                if kind == "confirm":
                    cat.record(det, p1, "confirmed", "app", note=note)
                elif kind == "reject":
                    cat.record(det, None, "rejected", "app", note=note)
                elif kind == "new":  # the individual and its first confirmation in one transaction
                    with cat.transaction():
                        ind = cat.ensure_individual(f"K{step}", "test")
                        cat.record(det, ind, "confirmed", "app", note=note)
                elif kind == "box":  # a hand-drawn box replaces the detector's
                    with cat.transaction():
                        new = cat.add_detection(
                            cat.db["detections"].get(det)["media_id"], (1, 1, 50, 50), source="manual"
                        )
                        cat.record(det, None, "rejected", "app", note=note + f" box {new}")
                elif kind == "undo":
                    last = cat.db.execute(
                        "SELECT id FROM effective_assignments WHERE who = 'app' ORDER BY id DESC LIMIT 1"
                    ).fetchone()[0]
                    cat.record(det, None, "undo", "app", undoes=last, note=note)
                else:
                    with cat.transaction():
                        a = cat.ensure_individual(f"M{step}a", "test")
                        b = cat.ensure_individual(f"M{step}b", "test")
                        cat.record(det, a, "confirmed", "app", note=note)
                    decisions.merge(cat, a, b, who="app")
                print(f"ack {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
