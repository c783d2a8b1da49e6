"""`herdbook` command line: one sub-command per engine function (as sqlite-utils mirrors its Python API).

This is the one module that sees engine, trainer and desktop; it imports the latter two only inside the
sub-commands that need them, so the inference install never loads torch or Qt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.catalogue import Catalogue, CatalogueError, default_catalogue_path
from engine.exif import valid_zone
from engine.export import ExportError, export_camtrap_dp, export_sightings_csv
from engine.ingest import IngestError, import_folder

# A side or species set after a detection's suggestions makes them wrong: the next import's suggest stage (or the
# app, at once) makes them again (engine.pipeline.pending_suggestion).
AGAIN = "; its open suggestions are made again at the next import"


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _progress_bar(desc: str):
    """A tqdm bar on a terminal; silent when output is piped (CI, scripts)."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="file", disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int, _path: str) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _open(args, create: bool = True) -> Catalogue:
    return Catalogue(args.catalogue or default_catalogue_path(), create=create)


def cmd_import(args) -> int:
    """ingest -> detect -> embed -> suggest (or ingest alone with --only-ingest / without a model)."""
    from engine.detect import DETECTOR_NAMES
    from engine.reid import ModelError, default_model_path

    levels = tuple(p for p in args.levels.split("/") if p) if args.levels else ()
    # Everything that can be checked is checked before the catalogue is created or anything imported.
    if not Path(args.folder).is_dir():
        raise CommandError(f"{args.folder}: not a folder")
    detector_spec = args.detector
    if detector_spec not in DETECTOR_NAMES and not Path(detector_spec).is_file():
        raise CommandError(f"{detector_spec}: no such detector file")
    if args.model and not Path(args.model).is_file():
        raise CommandError(f"{args.model}: no such re-identification model")
    if args.megadetector_json and not Path(args.megadetector_json).is_file():
        raise CommandError(f"{args.megadetector_json}: no such MegaDetector file")
    with _open(args) as cat:
        bar, update = _progress_bar("import")
        try:
            summary = import_folder(
                cat,
                args.folder,
                site=args.site,
                levels=levels,
                progress=update,
                batch_size=args.batch_size,
                species=args.species,
            )
        finally:
            bar.close()
        for line in summary.lines():
            print(line)
        if args.only_ingest or summary.cancelled:
            return 0
        if args.megadetector_json:
            from engine.detect import import_megadetector_json

            md = import_megadetector_json(cat, args.megadetector_json)
            print(
                f"megadetector boxes: {md.detections} on {md.media_matched} photos ({md.classified} given a species "
                "by the file's classifier); "
                f"{len(md.unmatched_files)} file names matched no photo, {len(md.ambiguous_files)} several"
            )
        model = args.model or default_model_path()
        if not Path(model).is_file():
            print(f"no re-identification model at {model}: photos imported, no suggestions made")
            return 0
        try:
            summary2 = _pipeline(cat, args).run(progress=_stage_bar())
        except ModelError as exc:
            raise CommandError(str(exc)) from None
        for line in summary2.lines():
            print(line)
    return 0


def _pipeline(cat, args):
    from engine.pipeline import Pipeline

    return Pipeline(cat, detector=args.detector, reid_model=args.model, species=args.species)


def _stage_bar():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.setdefault(stage, tqdm(total=total, desc=stage, disable=not sys.stderr.isatty(), leave=False))
        bar.total, bar.n = total, done
        bar.refresh()

    return update


def _who(args) -> str:
    import getpass

    return args.who or getpass.getuser()


def cmd_suggestions(args) -> int:
    from engine.pipeline import iter_open_suggestions

    # Streamed a page at a time: a season's queue is never held in memory whole.
    with _open(args, create=False) as cat:
        count = 0
        if args.json:
            sys.stdout.write("[")
        for count, it in enumerate(iter_open_suggestions(cat), 1):
            if args.json:
                sys.stdout.write(("\n" if count == 1 else ",\n") + json.dumps(it))
                continue
            cands = ", ".join(f"{c['rank']}:{c['code']} ({c['score']:.2f})" for c in it["candidates"])
            flag = f"  probably new [{it['proposal']}]" if it["probably_new"] else ""
            print(f"detection {it['detection_id']}  {Path(it['path']).name}  {cands}{flag}")
    if args.json:
        sys.stdout.write("\n]\n" if count else "]\n")
    else:
        print(f"{count} open suggestions")
    return 0


def _individual(cat, code: str, species: str | None) -> int:
    from engine import decisions

    try:
        found = decisions.find_individual(cat, code, species)
    except decisions.DecisionError as exc:
        raise CommandError(f"{cat.path}: {exc}") from exc
    if found is None:
        raise CommandError(f"{cat.path}: individual {code!r} not found")
    return found["id"]


def _detection(cat, detection_id: int) -> int:
    if not cat.db.execute("SELECT 1 FROM detections WHERE id = ?", [detection_id]).fetchone():
        raise CommandError(f"{cat.path}: no detection {detection_id}")
    return detection_id


def cmd_decide(args) -> int:
    from engine import decisions

    with _open(args, create=False) as cat:
        who = _who(args)
        try:
            if args.command == "undo":
                undone = decisions.undo_last(cat, who, detection_id=args.detection)
                print(f"undone: {decisions.describe(undone)}" if undone else f"nothing of {who}'s to undo")
                return 0
            if args.command == "merge":
                keep, gone = _individual(cat, args.keep, args.species), _individual(cat, args.gone, args.species)
                decisions.merge(cat, keep, gone, who)
                print(f"merged {args.gone} into {args.keep}")
                return 0
            if args.command == "undo-merge":
                row = decisions.undo_merge(cat, who)
                print(
                    f"undone: merge of individual {row['merged_id']} into {row['kept_id']}"
                    if row
                    else "no merge to undo"
                )
                return 0
            det = _detection(cat, args.detection)
            if args.command == "confirm":
                decisions.confirm(cat, det, _individual(cat, args.individual, args.species), who)
                print(f"detection {det}: confirmed as {args.individual}")
            elif args.command == "reject":
                ind = _individual(cat, args.individual, args.species) if args.individual else None
                decisions.reject(cat, det, ind, who)
                print(f"detection {det}: rejected {args.individual or 'all suggestions'}")
            elif args.command == "species":
                decisions.set_detection_species(cat, det, args.name, who)
                print(f"detection {det}: species {args.name}{AGAIN}")
            elif args.command == "side":
                side = None if args.side == "none" else args.side
                decisions.set_detection_side(cat, det, side, who)
                print(f"detection {det}: {f'{side} flank' if side else 'side not known'}{AGAIN}")
            else:  # new-individual
                dets = _proposal_detections(cat, det) if args.whole_proposal else [det]
                species = args.species or decisions.detection_species(cat, det)
                decisions.name_new_individual(cat, dets, args.code, who, species=species, name=args.name)
                print(f"new individual {args.code} ({species}): {len(dets)} detection(s) confirmed")
        except decisions.ExistingIndividual as exc:
            raise CommandError(f"{cat.path}: {exc} (herdbook confirm {args.detection} {exc.code})") from exc
        except decisions.DecisionError as exc:
            raise CommandError(f"{cat.path}: {exc}") from exc
    return 0


def _proposal_detections(cat, det: int) -> list[int]:
    row = cat.db.execute(
        "SELECT proposal FROM assignments WHERE detection_id = ? AND proposal IS NOT NULL ORDER BY id DESC LIMIT 1",
        [det],
    ).fetchone()
    if not row:
        return [det]
    return [
        r[0]
        for r in cat.db.execute(
            "SELECT DISTINCT a.detection_id FROM assignments a WHERE a.proposal = ? AND NOT EXISTS "
            "(SELECT 1 FROM effective_assignments e WHERE e.detection_id = a.detection_id)",
            [row[0]],
        )
    ]


def cmd_export(args) -> int:
    with _open(args, create=False) as cat:
        try:
            if args.format == "sightings":
                report = export_sightings_csv(cat, args.out)
            else:
                report = export_camtrap_dp(cat, args.out, utc_offset=args.utc_offset, media_license=args.media_license)
        except OSError as exc:
            raise CommandError(f"{args.out}: cannot write the export ({exc.strerror or exc})") from exc
    print(f"wrote {report.path}: " + ", ".join(f"{n} {k}" for k, n in report.rows.items()))
    for line in report.skipped:
        print(f"  skipped: {line}")
    return 0


def cmd_deployment(args) -> int:
    with _open(args, create=False) as cat:
        try:
            cat.deployment(args.name)
        except KeyError as exc:
            raise CommandError(f"{cat.path}: {exc.args[0]}") from None
        fields = {
            k: getattr(args, k)
            for k in ("latitude", "longitude", "utc_offset", "site", "camera")
            if getattr(args, k) is not None
        }
        if "utc_offset" in fields and not valid_zone(fields["utc_offset"]):
            raise CommandError(
                f"--utc-offset {fields['utc_offset']!r}: neither a UTC offset (+02:00) nor a time zone name "
                "(Europe/Berlin: daylight-saving time is then followed)"
            )
        if fields:
            cat.update_deployment(args.name, **fields)
        if args.clock_offset is not None:
            moved = cat.set_clock_offset(args.name, args.clock_offset)
            print(f"clock offset {args.clock_offset:+g} s applied to {moved} photos")
        if args.clock_reference:
            media_id, _, when = args.clock_reference.partition("=")
            offset = cat.set_clock_from_reference(args.name, int(media_id), when)
            print(f"clock offset {offset:+g} s derived from media {media_id} and applied")
        print(json.dumps(cat.deployment(args.name), indent=2))
    return 0


def cmd_demo(args) -> int:
    from engine.demo import build_demo, find_data_dir

    data_dir = Path(args.data) if args.data else find_data_dir(Path.cwd())
    if not data_dir or not data_dir.is_dir():
        raise CommandError("no shared/data folder found: pass --data DIR or set HERDBOOK_DATA")
    with _open(args) as cat:
        bar, update = _progress_bar("demo")
        try:
            detector = None if args.detector == "whole-frame" else args.detector
            summary = build_demo(cat, data_dir, progress=update, hold_out=bool(args.out), detector=detector)
        finally:
            bar.close()
        for imp in summary.imports:
            print(imp.lines()[0])
        print(f"demo sightings added: {summary.sightings_added}")
        print(json.dumps(cat.counts()))
        if args.out:
            _demo_pipeline(cat, Path(args.out))
    return 0


def cmd_train(args) -> int:
    try:
        from trainer.run import run_train
    except ImportError as exc:
        raise CommandError(f"training needs the train extra (pip install 'herdbook[train]'): {exc}") from None
    if not args.data and not args.catalogue_source:
        raise CommandError("train needs --data DIR (folder per individual) or --catalogue CAT")
    from tqdm import tqdm

    from engine.metrics import epoch_summary

    bar = tqdm(total=0, unit="batch", disable=not sys.stderr.isatty(), leave=False)

    def progress(event: dict) -> None:
        if args.progress_jsonl:  # for the app's Train dialog: one JSON object a line, nothing else on stdout
            print(json.dumps(event), flush=True)
            return
        if "stage" in event:
            tqdm.write(event["stage"])
        elif "epoch_done" in event:
            tqdm.write(epoch_summary(event["epoch_done"]))
        else:
            bar.total = event["batches"]
            bar.n = event["batch"]
            bar.set_description(f"{event['phase']} {event['epoch']}/{event['epochs']}")
            bar.refresh()

    try:
        metrics = run_train(args, progress=progress)
    finally:
        bar.close()
    print(json.dumps({"result": metrics}) if args.progress_jsonl else json.dumps(metrics, indent=2), flush=True)
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    from engine.imageio import ImageError, crop, load_rgb
    from engine.reid import Embedder, ModelError

    try:
        embedder = Embedder(args.model)
        crops = [crop(load_rgb(p), None, source=p) for p in args.photos]
    except (ModelError, ImageError) as exc:
        raise CommandError(str(exc)) from None
    vectors = embedder.embed(crops)
    np.save(args.out, vectors.astype(np.float32))
    print(
        f"wrote {args.out}: {len(vectors)} x {vectors.shape[1]} float32 ({embedder.card['name']} "
        f"{embedder.card['version']} on {embedder.device})"
    )
    return 0


def _demo_pipeline(cat, out: Path) -> None:
    """The headless main job on the demo: embed, suggest for the held-out encounters, score, export."""
    from engine.demo import demo_accuracy
    from engine.pipeline import Pipeline, open_suggestions
    from engine.reid import default_model_path

    out.mkdir(parents=True, exist_ok=True)
    if default_model_path().is_file():
        pipeline = Pipeline(cat, detector="whole-frame")  # every photo has its boxes already (build_demo)
        summary = pipeline.run(progress=_stage_bar())
        for line in summary.lines():
            print(line)
        items = open_suggestions(cat, pipeline.reid_model_id)
        (out / "suggestions.json").write_text(json.dumps(items, indent=1))
        card = pipeline.embedder.card.data
        unseen = {i.split(":", 1)[1] for i in card.get("held_out_individuals", []) if i.startswith("nyala:")}
        acc = demo_accuracy(cat, items, unseen)
        u = acc["unseen_individuals"]
        print(
            f"held-out encounters: {acc['held_out_photos']} photos; true individual top-1 {acc['top1']:.1%}, "
            f"top-5 {acc['top5']:.1%}, flagged probably-new {acc['flagged_new']:.1%}; of these, individuals the "
            f"model never trained on: {u['held_out_photos']} photos, top-1 {u['top1']:.1%}, top-5 {u['top5']:.1%}, "
            f"flagged probably-new {u['flagged_new']:.1%}"
        )
        (out / "demo_accuracy.json").write_text(json.dumps(acc, indent=2))
    else:
        print(f"no re-identification model at {default_model_path()}: suggestions skipped")
    report = export_sightings_csv(cat, out / "sightings.csv")
    print(f"wrote {report.path}: {report.rows['sightings']} sightings")


def cmd_app(args) -> int:
    try:
        from desktop.app import run
    except ImportError as exc:
        raise CommandError(f"the app needs the desktop extra: pip install 'herdbook[desktop]' ({exc})") from None
    catalogue = args.catalogue  # None: the app's rule (the catalogue it had open last, else the default)
    if args.screenshots:
        from desktop.screenshots import render_all

        for path in render_all(catalogue or default_catalogue_path(), args.screenshots):
            print(f"wrote {path}")
        return 0
    return run(catalogue, args.screenshot, args.tab)


def cmd_evaluate(args) -> int:
    from engine.evaluate import evaluate_folder, report_lines
    from engine.reid import ModelError

    bar, update = _progress_bar("evaluate")
    try:
        result = evaluate_folder(
            args.data, args.model, lambda d, t: update(d, t, ""), args.detector, species=args.species
        )
    except (ModelError, FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(report_lines(result)))
    return 0


def cmd_import_camtrap_dp(args) -> int:
    """A Camtrap DP package's deployments, media and observations; its boxes embedded for the gallery."""
    from engine.camtrap_dp_import import import_camtrap_dp
    from engine.ingest import IngestError

    if not (Path(args.package) / "datapackage.json").is_file():
        raise CommandError(f"{args.package}: no datapackage.json (not a Camtrap DP package)")
    with _open(args) as cat:
        bar, update = _progress_bar("read")
        try:
            report = import_camtrap_dp(cat, args.package, progress=lambda d, t: update(d, t, ""))
        except IngestError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for line in report.lines():
            print(line)
        if not args.only_read and report.detections:
            from engine.pipeline import Pipeline
            from engine.reid import ModelError

            try:
                stats = Pipeline(cat, detector="whole-frame").embed()
                print(f"embed: {stats.items} boxes embedded for the gallery")
            except ModelError as exc:
                print(f"not embedded ({exc}); run `herdbook import` later to embed them")
    return 0


def cmd_sync(args) -> int:
    """Push this station's catalogue to a central one and pull the other stations' individuals."""
    from engine.sync import SyncCancelled, sync

    def progress(stage: str, done: int, total: int) -> None:
        if args.progress_lines:
            print(f"progress {stage} {done}/{total}", flush=True)

    with _open(args, create=False) as local:
        try:
            central = Catalogue(args.to)
        except CatalogueError as exc:
            raise CommandError(str(exc)) from exc
        with central:
            try:
                report = sync(local, central, station=args.station, progress=progress)
            except (SyncCancelled, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        for line in report.lines():
            print(line)
    return 0


def cmd_merge_proposals(args) -> int:
    """Individuals of different stations that look like one animal, most probable first."""
    from dataclasses import asdict

    from engine.merge_proposals import propose_for_current_model

    with _open(args, create=False) as cat:
        proposals = propose_for_current_model(cat)
    if args.json:
        print(json.dumps([asdict(p) for p in proposals], indent=1))
        return 0
    for p in proposals:
        accept = f"herdbook merge {p.keep_code} {p.merge_code}"
        print(f"{p.keep_code} <- {p.merge_code} ({p.species}): {p.reason}   {accept}")
    print(f"{len(proposals)} merge proposals")
    return 0


def cmd_info(args) -> int:
    with _open(args, create=False) as cat:
        print(json.dumps({"catalogue": cat.location, "schema": cat.version, **cat.counts()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herdbook", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalogue",
        help="catalogue file, or a central catalogue's postgresql://user@host/db URL "
        f"(default $HERDBOOK_CATALOGUE, else {default_catalogue_path()})",
    )
    parser.add_argument("--selftest", action="store_true", help="run the built-in check and exit (use alone)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import", help="import every photo under a folder")
    p.add_argument("folder")
    p.add_argument("--site", help="site / deployment name for these photos")
    p.add_argument("--levels", help="what the folder levels name, from the top: e.g. station/species or -/station")
    p.add_argument("--batch-size", type=int, default=32, help="files committed per transaction")
    p.add_argument("--only-ingest", action="store_true", help="import photos only: no detection or suggestions")
    p.add_argument(
        "--detector",
        default="bundled",
        help="bundled (the animal detector Herdbook ships, default), whole-frame (photos already cropped to one "
        "animal), or your own YOLO detector .onnx/.pt (e.g. MegaDetector)",
    )
    p.add_argument(
        "--megadetector-json",
        help="boxes from a MegaDetector batch-output file, matched by file name; photos it names are not "
        "searched again (its empty frames stay empty), the others go through --detector",
    )
    p.add_argument("--model", help="re-identification model .onnx (default: the bundled one)")
    p.add_argument(
        "--species",
        help="the species on this card (for photos whose folders/tags name none); "
        "matched only against individuals of it",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("import-camtrap-dp", help="read a Camtrap DP package (Agouti, AddaxAI, Herdbook)")
    p.add_argument("package", help="folder with datapackage.json")
    p.add_argument("--only-read", action="store_true", help="do not embed the package's boxes")
    p.set_defaults(func=cmd_import_camtrap_dp)

    p = sub.add_parser("sync", help="push this catalogue to a central one and pull other stations' individuals")
    p.add_argument("--to", required=True, help="the central catalogue (postgresql://user@host/db, or a file)")
    p.add_argument("--station", help="this station's name there (kept; default: the catalogue file's name)")
    p.add_argument("--progress-lines", action="store_true", help="one 'progress STAGE DONE/TOTAL' line per batch")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("merge-proposals", help="individuals of two stations that look like one animal")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_merge_proposals)

    p = sub.add_parser("suggestions", help="list detections waiting for a decision")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suggestions)
    for name, helptext in (
        ("confirm", "confirm that a detection shows an individual"),
        ("reject", "reject a suggested individual (or all suggestions) for a detection"),
        ("new-individual", "name a new individual from a detection"),
        ("undo", "undo your latest decision (or the latest of one detection, if given)"),
        ("species", "say which species a detection shows"),
        ("side", "say which flank a detection shows (left, right, none)"),
        ("merge", "merge individual GONE into KEEP (both histories kept; undo-merge takes it back)"),
        ("undo-merge", "undo your latest merge"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "undo":
            p.add_argument("detection", type=int, nargs="?")
        elif name == "merge":
            p.add_argument("keep", help="code of the individual that survives")
            p.add_argument("gone", help="code of the individual merged into it")
        elif name != "undo-merge":
            p.add_argument("detection", type=int)
        if name == "species":
            p.add_argument("name", help="species name")
        if name == "side":
            p.add_argument("side", choices=("left", "right", "none"))
        if name == "confirm":
            p.add_argument("individual", help="individual code")
        if name == "reject":
            p.add_argument("individual", nargs="?", help="individual code (default: all suggestions)")
        if name == "new-individual":
            p.add_argument("code")
            p.add_argument("--name")
            p.add_argument(
                "--whole-proposal",
                action="store_true",
                help="also confirm the other photos proposed as this same new animal",
            )
        p.add_argument("--species")
        p.add_argument("--who", help="who decides (default: the login name)")
        p.set_defaults(func=cmd_decide)

    p = sub.add_parser("export", help="export sighting histories")
    p.add_argument("format", choices=["sightings", "camtrap-dp"])
    p.add_argument("out", help="CSV file (sightings) or folder (camtrap-dp)")
    p.add_argument(
        "--utc-offset", help="UTC offset (+HH:MM) or time zone (Europe/Berlin) for photo times that carry none"
    )
    p.add_argument("--media-license", default="CC-BY-4.0", help="licence of the photos (camtrap-dp; default CC-BY-4.0)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("deployment", help="show or set a deployment's place, time zone and clock correction")
    p.add_argument("name")
    p.add_argument("--latitude", type=float)
    p.add_argument("--longitude", type=float)
    p.add_argument(
        "--utc-offset", help="the deployment's UTC offset (+02:00) or time zone name (daylight saving followed)"
    )
    p.add_argument("--site")
    p.add_argument("--camera")
    p.add_argument("--clock-offset", type=float, help="seconds to add to every camera time")
    p.add_argument("--clock-reference", help="MEDIA_ID=ISO-TIME: that photo was really taken then")
    p.set_defaults(func=cmd_deployment)

    p = sub.add_parser("demo", help="build a demo catalogue from shared/data (nyala and lion)")
    p.add_argument("--data", help="the shared/data folder (default: found beside the checkout)")
    p.add_argument("--out", help="also run the headless pipeline and write its outputs here")
    p.add_argument(
        "--detector",
        default="bundled",
        help="as for import: bundled (default: each photo's best box is its sighting, as on a real card) or "
        "whole-frame (the whole photo, as before 0.11.0's demo)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train or fine-tune the re-identification network (train extra)")
    p.add_argument("--config", help="YAML overriding resources/config/train.yaml")
    p.add_argument("--data", action="append", help="folder with one sub-folder per individual (repeatable)")
    p.add_argument(
        "--catalogue",
        dest="catalogue_source",
        help="fine-tune on this catalogue's confirmed individuals (starts from the current model)",
    )
    p.add_argument("--out", required=True, help="output folder: checkpoints, ONNX, model card")
    p.add_argument("--name", default="herdbook-reid")
    p.add_argument("--version", default="dev")
    p.add_argument("--init", help="start from these weights (.pt)")
    p.add_argument("--val-fraction", type=float, help="share of identities held out for evaluation")
    p.add_argument(
        "--budget-minutes", type=float, help="wall-clock budget for the whole run (photos, training, export)"
    )
    p.add_argument("--compare-model", help="measure this model on the same held-out photos (default: the bundled one)")
    p.add_argument("--progress-jsonl", action="store_true", help="progress as JSON lines on stdout (the app reads it)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="embed whole photos with the re-identification model")
    p.add_argument("photos", nargs="+")
    p.add_argument("--model", help="ONNX model (default: the bundled one)")
    p.add_argument("--out", required=True, help=".npy file: one float32 row per photo, in argument order")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("app", help="open the desktop app")
    p.add_argument("--screenshot", help="render the main window offscreen to this PNG and exit")
    p.add_argument("--tab", type=int, default=0, help="tab to show: 0 overview, 1 review, 2 individuals")
    p.add_argument("--screenshots", help="render every screen to PNGs in this folder and exit")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("evaluate", help="measure re-identification on a folder of identified photos")
    p.add_argument("--data", required=True, help="folder per individual (or per individual/encounter)")
    p.add_argument("--model", help="ONNX re-identification model (default: the bundled one)")
    p.add_argument("--detector", default="bundled", help="as for import: bundled, whole-frame or a detector file")
    p.add_argument(
        "--species", help="the photos' species: a side the names do not give is inferred as on import, where known"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="row counts of the catalogue")
    p.set_defaults(func=cmd_info)
    return parser


VALUE_OPTIONS = ("--utc-offset",)


def join_negative_values(argv: list[str]) -> list[str]:
    """'--utc-offset -07:00' -> '--utc-offset=-07:00': argparse takes a value starting with '-' for an option,
    which refused every deployment west of Greenwich."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--selftest"]:
        from engine.selftest import run_selftest

        ok, verdict = run_selftest()
        print(verdict if ok else f"selftest FAILED: {verdict}")
        return 0 if ok else 1
    parser = build_parser()
    args = parser.parse_args(join_negative_values(argv or ["app"]))  # plain `herdbook` opens the app
    try:
        return args.func(args)
    except (CatalogueError, IngestError, ExportError, CommandError) as exc:
        print(f"herdbook: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("herdbook: interrupted; the catalogue keeps everything committed so far", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
