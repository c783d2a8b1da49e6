"""Another process writing decisions into a catalogue while the app has it open (a second reviewer, the CLI).

    python -m tests.procs.writer CATALOGUE N WHO
Prints one line per committed write.
"""

from __future__ import annotations

import sys

from engine.catalogue import Catalogue


def main() -> int:
    path, n, who = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with Catalogue(path, create=False) as cat:
        dets = [r["id"] for r in cat.query("SELECT id FROM detections ORDER BY id")]
        ind = cat.ensure_individual("P1", "test")
        for i in range(n):
            cat.confirm(dets[i % len(dets)], ind, who=who)
            cat.counts()
            print(f"ack {i + 1}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
