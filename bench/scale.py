"""A field season's catalogue at scale: key -> next suggestion, window open, suggest for 1,000 new detections,
exports and `suggestions --json`, with each measurement's peak memory, on catalogues of 10k / 100k / 1M
detections grown from real data.

How a catalogue is grown (same tables and decisions as the app writes): real nyala photos (their paths, so the
review shows real images) embedded by the bundled model; one detection per photo row; one individual per ten
detections, each individual's vectors spread around a real photo's embedding; 70 % of detections confirmed, 30 %
waiting with five ranked suggestions (a third of them also 'probably new'); 50 deployments; one photo every 15 s
over the season. Every measurement runs in a fresh child process, so its peak RSS is its own.

Usage: QT_QPA_PLATFORM=offscreen python bench/scale.py [--sizes 10000 100000 1000000] [--work DIR] [--label after]
Writes bench/results/scale_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEASON_START = 1_767_225_600  # 2026-01-01T00:00:00Z
CONFIRMED_SHARE, PER_INDIVIDUAL, SUGGESTIONS = 0.7, 10, 5


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def real_vectors(n: int = 100):
    """Embeddings of ``n`` real nyala photos by the bundled model, and their paths."""
    from engine.demo import find_data_dir
    from engine.imageio import load_rgb
    from engine.reid import Embedder

    paths = sorted((find_data_dir() / "nyala" / "train").rglob("*.jpg"))[:n]
    emb = Embedder()
    return emb.embed([load_rgb(p) for p in paths]), [str(p) for p in paths], emb.card


def build(path: Path, size: int, seed: int = 0) -> None:
    """Grow a catalogue of ``size`` detections (see the module docstring)."""
    import numpy as np

    from engine.catalogue import Catalogue, utc_now

    rng = np.random.default_rng(seed)
    base, paths, card = real_vectors()
    if isinstance(path, Path):
        path.unlink(missing_ok=True)
    cat = Catalogue(path)
    model_id = cat.ensure_model(card["name"], card["version"], "reid", card.data.get("onnx_sha256"), card.data)
    who_model = f"model:{card['name']}-{card['version']}"
    now = utc_now()
    n_ind = max(size // PER_INDIVIDUAL, 1)
    centre = base[np.arange(n_ind) % len(base)] + rng.normal(0, 0.04, (n_ind, base.shape[1])).astype(np.float32)
    db = cat.db.conn
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO deployments (id, name, site, latitude, longitude, clock_offset_s) VALUES (?, ?, ?, ?, ?, 0)",
        [(d, f"cam{d:02d}", f"site{d // 10}", -27.9 + d / 1000, 32.4 + d / 1000) for d in range(1, 51)],
    )
    db.executemany(
        "INSERT INTO individuals (id, code, species, created_at) VALUES (?, ?, 'nyala', ?)",
        [(i, f"N{i:06d}", now) for i in range(1, n_ind + 1)],
    )
    chunk = 50_000
    assignment_id = 0
    for start in range(0, size, chunk):
        ids = np.arange(start + 1, min(start + chunk, size) + 1)
        owner = rng.integers(0, n_ind, len(ids))
        vec = centre[owner] + rng.normal(0, 0.035, (len(ids), base.shape[1])).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        media, dets, embs, assigns = [], [], [], []
        for k, i in enumerate(ids.tolist()):
            p = paths[i % len(paths)]
            taken = _iso(SEASON_START + 15 * i)
            media.append((i, f"{i:064x}", f"{p}#{i}", Path(p).name, 1 + i % 50, taken, taken))
            dets.append((i, i, 10.0, 10.0, 200.0, 150.0, 0.9, "animal", "bench", ("left", "right")[i % 2], now))
            embs.append((i, model_id, vec[k].tobytes()))
            if rng.random() < CONFIRMED_SHARE:
                assignment_id += 1
                assigns.append((assignment_id, i, int(owner[k]) + 1, "confirmed", 0.9, None, "bench", now, None, None))
            else:
                cands = rng.choice(n_ind, SUGGESTIONS, replace=False)
                for rank, c in enumerate(cands, 1):
                    assignment_id += 1
                    note = json.dumps({"gallery_detection": None, "appearance": 0.8 - 0.05 * rank})
                    assigns.append(
                        (
                            assignment_id,
                            i,
                            int(c) + 1,
                            "suggested",
                            0.8 - 0.05 * rank,
                            rank,
                            who_model,
                            now,
                            note,
                            model_id,
                        )
                    )
                if i % 3 == 0:
                    assignment_id += 1
                    assigns.append(
                        (
                            assignment_id,
                            i,
                            None,
                            "suggested",
                            0.3,
                            0,
                            who_model,
                            now,
                            "probably a new individual",
                            model_id,
                        )
                    )
        db.executemany(
            "INSERT INTO media (id, sha256, path, file_name, kind, status, deployment_id, taken_at, taken_at_raw) "
            "VALUES (?, ?, ?, ?, 'image', 'ok', ?, ?, ?)",
            media,
        )
        db.executemany(
            "INSERT INTO detections (id, media_id, x, y, w, h, score, label, source, viewpoint, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            dets,
        )
        db.executemany("INSERT INTO embeddings (detection_id, model_id, vector) VALUES (?, ?, ?)", embs)
        db.executemany(
            "INSERT INTO assignments (id, detection_id, individual_id, status, score, rank, who, at, note, model_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            assigns,
        )
        print(f"  built {ids[-1]:,} of {size:,} detections", flush=True)
    db.execute("COMMIT")  # no ANALYZE: Herdbook never runs it, so the planner sees what a user's catalogue shows
    if cat.dialect == "postgresql":
        cat.db.reset_identities()  # rows were written with their ids
    cat.close()


def adopt_current_model(cat) -> None:
    """A catalogue grown under an older card of the same ONNX file (same sha256: same vectors) is relabelled to the
    current card's version, so the suggest stage finds its embeddings instead of embedding nothing."""
    from engine.reid import default_model_path

    card = json.loads(default_model_path().with_suffix(".json").read_text())
    with cat.transaction():
        if not cat.db.execute(
            "SELECT 1 FROM models WHERE name = ? AND version = ?", [card["name"], card["version"]]
        ).fetchone():
            cat.db.execute(
                "UPDATE models SET version = ? WHERE kind = 'reid' AND name = ? AND onnx_sha256 = ?",
                [card["version"], card["name"], card.get("onnx_sha256")],
            )


# -- measurements, each in its own process ------------------------------------------------------------------


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_app(path: str, presses: int) -> dict:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from desktop.app import MainWindow

    t0 = time.perf_counter()
    window = MainWindow(path)
    window.show()
    app.processEvents()
    opened = time.perf_counter() - t0
    window.tabs.setCurrentWidget(window.review)
    app.processEvents()
    review, times = window.review, []
    for i in range(presses):
        if review.current() is None:
            break
        t0 = time.perf_counter()
        QTest.keyClick(review, Qt.Key.Key_S if i % 2 else Qt.Key.Key_R)  # a decision, then a skip
        review.repaint()
        app.processEvents()
        times.append(1000 * (time.perf_counter() - t0))
    window.close()
    return {
        "window_open_s": opened,
        "key_median_ms": statistics.median(times),
        "key_max_ms": max(times),
        "presses": len(times),
        "app_peak_mb": _peak_mb(),
    }


def measure_suggest(path: str, n_new: int) -> dict:
    """Add ``n_new`` detections with embeddings (no coat-pattern features: the search alone; verification costs
    are bench/suggest_speed.py's) and time the pipeline's suggest stage on them, twice: the first run on a
    catalogue builds its gallery folder (engine.gallery_index: every confirmed vector read once, the IVF index
    trained), the second, on ``n_new`` more, is the ordinary run of a catalogue in use."""
    import numpy as np

    from engine.catalogue import Catalogue, utc_now
    from engine.pipeline import Pipeline

    cat = Catalogue(path)
    pipe = Pipeline(cat, detector="whole-frame")
    rng = np.random.default_rng(1)
    db = cat.db.conn
    vecs = db.execute(
        "SELECT vector FROM embeddings WHERE model_id = ? ORDER BY detection_id LIMIT ?", [pipe.reid_model_id, n_new]
    ).fetchall()
    out = {}
    for run, key in enumerate(("suggest_1000_first_s", "suggest_1000_s")):
        top = db.execute("SELECT max(id) FROM detections").fetchone()[0]
        db.execute("BEGIN")
        for k in range(n_new):
            i = top + 1 + k
            v = np.frombuffer(vecs[k % len(vecs)][0], np.float32)
            v = v + rng.normal(0, 0.02, len(v)).astype(np.float32)
            v /= np.linalg.norm(v)
            db.execute(
                "INSERT INTO media (id, sha256, path, file_name, kind, status, deployment_id, taken_at) "
                "VALUES (?, ?, ?, ?, 'image', 'ok', 1, ?)",
                [i, f"new{i:061x}", f"/new/{i}.jpg", f"{i}.jpg", _iso(SEASON_START + 200 * 86400 + 20 * k + run)],
            )
            db.execute(
                "INSERT INTO detections (id, media_id, source, label, created_at) VALUES (?, ?, 'bench', 'animal', ?)",
                [i, i, utc_now()],
            )
            db.execute(
                "INSERT INTO embeddings (detection_id, model_id, vector) VALUES (?, ?, ?)",
                [i, pipe.reid_model_id, v.tobytes()],
            )
        db.execute("COMMIT")
        if cat.dialect == "postgresql":
            cat.db.reset_identities()  # rows were written with their ids
        t0 = time.perf_counter()
        stats = pipe.suggest()
        out[key] = time.perf_counter() - t0
        out["suggested"] = stats.items
    cat.close()
    return out | {"suggest_peak_mb": _peak_mb()}


def measure_grouping(n: int) -> dict:
    """Probably-new detections of one import linked into proposals (engine.match.group_new): ``n`` detections
    around n / 8 animals, 20 cameras, one season day."""
    import numpy as np

    from engine.match import group_new

    rng = np.random.default_rng(2)
    base, _, _ = real_vectors(50)
    owner = rng.integers(0, max(n // 8, 1), n)
    centre = base[owner % len(base)] + rng.normal(0, 0.04, (n, base.shape[1])).astype(np.float32)
    vecs = centre / np.linalg.norm(centre, axis=1, keepdims=True)
    items = [
        {
            "media_id": i,
            "deployment_id": i % 20,
            "taken_at": _iso(SEASON_START + int(rng.integers(0, 86400))),
            "n_in_photo": 1,
        }
        for i in range(n)
    ]
    t0 = time.perf_counter()
    groups = group_new(items, vecs, threshold=0.9)
    return {"group_s": time.perf_counter() - t0, "groups": len(set(groups)), "group_peak_mb": _peak_mb()}


def measure_export(path: str, what: str, out: str) -> dict:
    from engine.catalogue import Catalogue
    from engine.export import export_camtrap_dp, export_sightings_csv

    t0 = time.perf_counter()
    if what == "suggestions_json":
        from herdbook.cli import main

        with open(out, "w") as fh:
            saved, sys.stdout = sys.stdout, fh
            try:
                main(["--catalogue", path, "suggestions", "--json"])
            finally:
                sys.stdout = saved
    else:
        with Catalogue(path) as cat:
            if what == "csv":
                export_sightings_csv(cat, out)
            else:
                export_camtrap_dp(cat, out, utc_offset="+02:00")
    return {f"{what}_s": time.perf_counter() - t0, f"{what}_peak_mb": _peak_mb()}


def child(*args: str, timeout_s: float = 600) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        res = subprocess.run(
            [sys.executable, __file__, "--child", *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {f"error_{args[0]}": f"over {timeout_s:.0f} s"}
    if res.returncode:
        return {
            f"error_{args[0]}": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        }
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_child_measurement(args: list[str]) -> None:
    what, path = args[0], args[1]
    if what == "app":
        out = measure_app(path, int(args[2]))
    elif what == "suggest":
        out = measure_suggest(path, int(args[2]))
    elif what == "grouping":
        out = measure_grouping(int(path))
    elif what == "station_sync":
        out = measure_station_sync(path, Path(args[2]))
    else:
        out = measure_export(path, what, args[2])
    print(json.dumps(out))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child_measurement(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "scale")
    parser.add_argument("--label", default="after", help="names the result file: bench/results/scale_<label>.json")
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--rebuild", action="store_true", help="grow the catalogues again even when present")
    parser.add_argument(
        "--suggest-up-to",
        type=int,
        default=1_000_000,
        help="largest catalogue whose suggest stage is timed",
    )
    parser.add_argument("--grouping", type=int, default=16_000, help="probably-new detections grouped (0: skip)")
    parser.add_argument(
        "--central", action="store_true", help="measure central catalogues on a PostgreSQL server (started here)"
    )
    parser.add_argument("--only-sync", action="store_true", help="with --central: only the station sync")
    args = parser.parse_args()
    if args.central:
        return main_central(args)
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in args.sizes:
        grown = args.work / f"grown-{size}.sqlite"
        if args.rebuild or not grown.exists():
            t0 = time.perf_counter()
            build(grown, size)
            print(f"grew {grown} in {time.perf_counter() - t0:.0f} s", flush=True)
        run = args.work / f"run-{size}.sqlite"  # measurements write decisions: each run starts from the grown copy
        for suffix in ("", "-wal", "-shm"):
            Path(f"{run}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(f"{run}.gallery", ignore_errors=True)  # the gallery folder is the copy's own, built anew
        shutil.copyfile(grown, run)
        from engine.catalogue import Catalogue

        with Catalogue(run) as cat:  # a one-time schema migration is not the window's opening time
            adopt_current_model(cat)
        row = {"detections": size}
        row |= child("app", run, args.presses if size < 1_000_000 else max(4, args.presses // 4))
        if size <= args.suggest_up_to:
            row |= child("suggest", run, 1000)
        for what, out in (("csv", "sightings.csv"), ("camtrap_dp", "dp"), ("suggestions_json", "suggestions.json")):
            row |= child(what, run, args.work / f"{size}-{out}")
        results[size] = row
        print(json.dumps(row), flush=True)
    grouping = child("grouping", args.grouping) if args.grouping else {}
    if grouping:
        print(f"grouping {args.grouping:,} probably-new detections: {json.dumps(grouping)}", flush=True)
    keys = [
        ("window_open_s", "window s", "{:.2f}"),
        ("key_median_ms", "key ms", "{:.0f}"),
        ("app_peak_mb", "app MB", "{:.0f}"),
        ("suggest_1000_first_s", "1st suggest s", "{:.2f}"),
        ("suggest_1000_s", "suggest 1k s", "{:.2f}"),
        ("csv_s", "CSV s", "{:.1f}"),
        ("csv_peak_mb", "CSV MB", "{:.0f}"),
        ("camtrap_dp_s", "DP s", "{:.1f}"),
        ("camtrap_dp_peak_mb", "DP MB", "{:.0f}"),
        ("suggestions_json_s", "json s", "{:.1f}"),
        ("suggestions_json_peak_mb", "json MB", "{:.0f}"),
    ]
    print(f"\n{'detections':>10s} " + " ".join(f"{h:>12s}" for _, h, _ in keys))
    for size, row in results.items():
        cells = [fmt.format(row[k]) if isinstance(row.get(k), float | int) else "err" for k, _, fmt in keys]
        print(f"{size:>10,d} " + " ".join(f"{c:>12s}" for c in cells))
    out = ROOT / "bench" / "results" / f"scale_{args.label}.json"
    out.write_text(json.dumps({"sizes": results, "grouping": grouping, "cpu": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main_central(args) -> int:
    """The same measurements on a central catalogue (PostgreSQL), plus the sync of a 10k-photo station into it."""
    from engine.catalogue import Catalogue, catalogue_files
    from tests.postgres_server import PostgresServer, find_binaries

    server = PostgresServer(find_binaries())
    results = {}
    try:
        for size in args.sizes:
            grown = server.new_database()
            t0 = time.perf_counter()
            build(grown, size)
            grow_s = time.perf_counter() - t0
            print(f"grew a central catalogue of {size:,} detections in {grow_s:.0f} s", flush=True)
            run = server.copy_database(grown)
            shutil.rmtree(f"{catalogue_files(run)}.gallery", ignore_errors=True)
            with Catalogue(run) as cat:
                adopt_current_model(cat)
                # A running server has long since vacuumed and analysed its tables; a freshly grown one has
                # not, and its autovacuum would run through the measurements below.
                t0 = time.perf_counter()
                cat.db.execute("VACUUM ANALYZE")
                cat.db.execute("ALTER SYSTEM SET log_min_duration_statement = 20")
                cat.db.execute("SELECT pg_reload_conf()")
            row = {"detections": size, "grow_s": grow_s, "vacuum_analyze_s": time.perf_counter() - t0}
            if not args.only_sync:
                logged = len(server.log_text())
                row |= child("app", run, args.presses)
                slow = [line for line in server.log_text()[logged:].splitlines() if "duration:" in line]
                print(f"statements over 20 ms while the app opened and took {args.presses} keys:", flush=True)
                print("\n".join(line[:300] for line in slow) or "  none", flush=True)
                row |= child("suggest", run, 1000)
                for what, out in (
                    ("csv", "sightings.csv"),
                    ("camtrap_dp", "dp"),
                    ("suggestions_json", "suggestions.json"),
                ):
                    row |= child(what, run, args.work / f"central-{size}-{out}")
            row |= child("station_sync", run, args.work, timeout_s=3600)
            results[size] = row
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    print(f"\n{'detections':>10s} " + " ".join(f"{k:>14s}" for k in CENTRAL_KEYS))
    for size, row in results.items():
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float | int) else "err" for k in CENTRAL_KEYS]
        print(f"{size:>10,d} " + " ".join(f"{c:>14s}" for c in cells))
    out = ROOT / "bench" / "results" / f"scale_central_{args.label}.json"
    if args.only_sync and out.exists():  # keep the other measurements of the file, update the sync's
        old = json.loads(out.read_text())["sizes"]
        results = {s: old.get(str(s), {}) | row for s, row in results.items()}
    out.write_text(json.dumps({"sizes": results, "cpu": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


CENTRAL_KEYS = ["window_open_s", "key_median_ms", "suggest_1000_s", "csv_s", "camtrap_dp_s", "station_sync_s"]


def measure_station_sync(central: str, work: Path, photos: int = 10_000) -> dict:
    """A station of ``photos`` grown photos (decided and waiting rows as above) synced with the central catalogue
    (pushing its rows, pulling the other animals' gallery), twice; in its own process, for its peak memory."""
    from engine.catalogue import Catalogue
    from engine.sync import sync

    station = work / f"station-{photos}.sqlite"
    if not station.exists():
        build(station, photos, seed=1)
    copy = work / "station-run.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(station, copy)
    with Catalogue(copy) as local, Catalogue(central) as cat:
        # The grown rows share their sha256 values with the central catalogue's own: give the station its own photos.
        with local.transaction():
            local.db.execute("UPDATE media SET sha256 = 'station-' || sha256")
        t0 = time.perf_counter()
        report = sync(local, cat, station="grown")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = sync(local, cat, station="grown")
        return {
            "station_photos": photos,
            "station_sync_s": first,
            "station_sync_rows": report.moved,
            "station_resync_s": time.perf_counter() - t0,
            "station_resync_rows": again.moved,
            "station_resync_moved": {"pushed": dict(again.pushed), "pulled": dict(again.pulled)},
            "station_thumbnail_errors": len(report.thumbnail_errors),
            "station_sync_peak_mb": _peak_mb(),
        }


if __name__ == "__main__":
    raise SystemExit(main())
