"""Two field stations, one population, a central catalogue on a real PostgreSQL server (issue 14).

nyala/train is split into two stations' cards: station A holds every encounter but the last of each nyala
with two or more, station B holds those last encounters under codes of its own ("S2-<n>"); a nyala met only
once goes to one station only (alternately), so B's catalogue has animals A never saw and the other way
round. Each station imports its card, labels its animals (the folder names) and embeds them with the bundled
model; then both sync to the central catalogue, A syncs again (and pulls B's animals), and the central
catalogue proposes merges of individuals that the two named apart. Also: a second sync (rows moved), a sync
killed with SIGKILL midway and resumed (the central catalogue it leaves equals a clean sync's), an export
of the central catalogue.

    python bench/stations.py            # prints a table, writes bench/results/stations.json
    python bench/stations.py --crops whole   # whole photos embedded: bench/results/stations_whole.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.catalogue import Catalogue  # noqa: E402
from engine.demo import (  # noqa: E402
    find_data_dir,
    label_detected_individuals,
    label_folder_individuals,
    nyala_photo,
)
from engine.ingest import import_folder  # noqa: E402
from engine.merge_proposals import propose_for_current_model  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.sync import sync  # noqa: E402
from tests.postgres_server import PostgresServer, find_binaries  # noqa: E402

WORK = ROOT / "bench" / "work" / "stations"
PREFIX_B = "S2-"


def split_cards(data: Path) -> dict:
    """Copies of nyala/train as two stations' cards; returns what went where."""
    shutil.rmtree(WORK, ignore_errors=True)
    shared, only = [], {"A": [], "B": []}
    single = 0
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        encounters = sorted({nyala_photo(f.name)[0] for f in files if nyala_photo(f.name)}, key=int)
        if len(encounters) >= 2:
            shared.append(folder.name)
            for f in files:
                last = nyala_photo(f.name) and nyala_photo(f.name)[0] == encounters[-1]
                station, code = ("B", PREFIX_B + folder.name) if last else ("A", folder.name)
                target = WORK / station / "card" / code
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target / f.name)
        else:
            station = "AB"[single % 2]
            single += 1
            only[station].append(folder.name)
            code = (PREFIX_B if station == "B" else "") + folder.name
            target = WORK / station / "card" / code
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy(f, target / f.name)
    return {"shared": shared, "only_A": only["A"], "only_B": only["B"]}


def build_station(name: str, crops: str) -> dict:
    """Import the station's card, label its animals (folder names) and embed them: on the bundled detector's
    best box per photo (as a station confirms them), or on whole photos (``crops='whole'``, faster)."""
    path = WORK / f"{name}.sqlite"
    t0 = time.perf_counter()
    with Catalogue(path) as cat:
        imp = import_folder(cat, WORK / name / "card", site=name)
        if crops == "detector":
            pipeline = Pipeline(cat)
            pipeline.detect()
            label_detected_individuals(cat, imp.import_id, "nyala")
        else:
            label_folder_individuals(cat, imp.import_id, "nyala")
            pipeline = Pipeline(cat, detector="whole-frame")
        pipeline.embed()
        counts = cat.counts()
    return {"seconds": round(time.perf_counter() - t0, 1), **counts}


def timed_sync(station: str, url: str) -> dict:
    with Catalogue(WORK / f"{station}.sqlite") as local, Catalogue(url) as central:
        t0 = time.perf_counter()
        report = sync(local, central, station=station)
        return {
            "seconds": round(time.perf_counter() - t0, 2),
            "moved": report.moved,
            "pushed": dict(report.pushed),
            "pulled": dict(report.pulled),
            "renamed": len(report.renamed),
        }


def stable_rows(url: str) -> dict:
    """What a central catalogue holds, by stable ids (comparable between two databases)."""
    with Catalogue(url) as cat:
        out = {}
        for table in ("deployments", "media", "detections", "individuals", "assignments"):
            out[table] = sorted(map(tuple, cat.db.execute(f"SELECT origin, origin_id FROM {table}").fetchall()))
        out["embeddings"] = cat.db["embeddings"].count
        out["thumbnails"] = cat.db["thumbnails"].count
        return out


def killed_and_resumed(server: PostgresServer, kill_after_lines: int) -> dict:
    """Sync station B into two fresh central databases: once cleanly, once killed midway then run again."""
    clean, killed = server.new_database(), server.new_database()
    timed_sync("B", clean)
    cmd = [sys.executable, "-m", "herdbook", "--catalogue", str(WORK / "B.sqlite"), "sync", "--to", killed]
    proc = subprocess.Popen([*cmd, "--progress-lines"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if len(seen) >= kill_after_lines:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    with Catalogue(killed) as cat:
        partial = cat.counts()
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    return {
        "killed_at": seen[-1] if seen else None,
        "rows_before_resume": partial,
        "resume_output": resumed.stdout.strip().splitlines(),
        "equal_to_clean_sync": stable_rows(clean) == stable_rows(killed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="shared/data (default: beside the checkout)")
    parser.add_argument(
        "--crops", choices=["detector", "whole"], default="detector", help="what the stations embed (see build_station)"
    )
    args = parser.parse_args()
    data = Path(args.data) if args.data else find_data_dir(ROOT) / "nyala" / "train"
    split = split_cards(data)
    stations = {name: build_station(name, args.crops) for name in "AB"}
    server = PostgresServer(find_binaries())
    try:
        central = server.new_database()
        syncs = [("A", timed_sync("A", central)), ("B", timed_sync("B", central)), ("A", timed_sync("A", central))]
        again = [("A", timed_sync("A", central)), ("B", timed_sync("B", central))]
        t0 = time.perf_counter()
        with Catalogue(central) as cat:
            proposals = propose_for_current_model(cat)
            counts = cat.counts()
        proposal_s = time.perf_counter() - t0
        correct = [p for p in proposals if p.merge_code.removeprefix(PREFIX_B) == p.keep_code.removeprefix(PREFIX_B)]
        resumed = killed_and_resumed(server, kill_after_lines=6)
        with Catalogue(WORK / "A.sqlite") as cat:
            a_counts = cat.counts()
            remote = cat.db.execute("SELECT count(*) FROM media WHERE status = 'remote'").fetchone()[0]
    finally:
        server.stop()
    result = {
        "data": str(data),
        "crops": args.crops,
        "split": {k: len(v) for k, v in split.items()},
        "stations": stations,
        "syncs": syncs,
        "second_syncs": again,
        "central": counts,
        "station_A_after_pull": a_counts | {"remote_photos": remote},
        "merge_proposals": {
            "proposed": len(proposals),
            "correct": len(correct),
            "shared_individuals": len(split["shared"]),
            "precision": round(len(correct) / max(len(proposals), 1), 3),
            "recall": round(len(correct) / max(len(split["shared"]), 1), 3),
            "seconds": round(proposal_s, 1),
            "wrong": [(p.keep_code, p.merge_code, round(p.probability, 3)) for p in proposals if p not in correct],
        },
        "killed_and_resumed": resumed,
    }
    print(f"split: {result['split']}")
    for name, s in stations.items():
        print(f"station {name}: {s['media']} photos, {s['individuals']} individuals, built in {s['seconds']} s")
    print("| sync | seconds | rows moved |\n|---|---|---|")
    for name, s in syncs:
        print(f"| {name} | {s['seconds']} | {s['moved']} |")
    for name, s in again:
        print(f"| {name} again | {s['seconds']} | {s['moved']} |")
    m = result["merge_proposals"]
    print(
        f"merge proposals: {m['proposed']} proposed, {m['correct']} correct "
        f"(precision {m['precision']:.1%}, recall {m['recall']:.1%} of {m['shared_individuals']} shared), "
        f"{m['seconds']} s"
    )
    print(f"killed at '{resumed['killed_at']}', resumed: equal to a clean sync = {resumed['equal_to_clean_sync']}")
    out = ROOT / "bench" / "results" / ("stations.json" if args.crops == "detector" else "stations_whole.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
