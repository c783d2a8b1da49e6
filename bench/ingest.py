"""Import throughput (images/s) and peak memory on real folders. Not a test: prints a table, writes JSON.

Each import runs in a fresh child process into a fresh catalogue, so its peak RSS is its own.
Usage: python bench/ingest.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import run_child  # noqa: E402

from engine.demo import find_data_dir  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from engine.catalogue import Catalogue
from engine.ingest import import_folder
cat = Catalogue(sys.argv[1])
t0 = time.perf_counter()
s = import_folder(cat, sys.argv[2])
dt = time.perf_counter() - t0
print(json.dumps({"files": s.files_seen, "added": s.added, "errors": len(s.errors), "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_once(folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run_child(CHILD, f"{tmp}/c.sqlite", folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = find_data_dir(ROOT)
    sets = {"nyala/train": data / "nyala/train", "exif/jpg": data / "exif/jpg", "camtraps": data / "camtraps"}
    rows = []
    for name, folder in sets.items():
        runs = [run_once(folder) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        rows.append(
            {
                "dataset": name,
                "files": best["files"],
                "megabytes": round(mb, 1),
                "best_seconds": round(best["seconds"], 3),
                "images_per_s": round(best["files"] / best["seconds"], 1),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
                "errors": best["errors"],
            }
        )
    print(f"{'dataset':<14}{'files':>7}{'MB':>8}{'s':>8}{'img/s':>9}{'peak MB':>9}")
    for r in rows:
        print(
            f"{r['dataset']:<14}{r['files']:>7}{r['megabytes']:>8}{r['best_seconds']:>8}"
            f"{r['images_per_s']:>9}{r['peak_rss_mb']:>9}"
        )
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "repeat": args.repeat,
        "rows": rows,
    }
    out = ROOT / "bench" / "results" / "ingest.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
