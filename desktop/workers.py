"""Long work off the UI thread. Each worker opens its own catalogue connection (SQLite connections belong to
one thread); WAL lets the window keep reading while a worker writes."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from engine.catalogue import Catalogue
from engine.metrics import epoch_summary

_RUNNING: dict[int, Worker] = {}  # workers whose thread has not ended yet, whoever else still holds them


class _Release(QObject):
    """Lives in the thread that made the worker (the UI's), so the QThread's ``finished`` reaches it queued there:
    only then is the worker let go. Qt ends the whole app when a QThread that still runs is destroyed, which a
    dialog that replaced its worker right after ``finished`` did (CI: "Aborted"). It names the worker by key, not
    by reference, so a finished worker is freed at once rather than by a later garbage collection."""

    def __init__(self, key: int):
        super().__init__()
        self.key = key

    def release(self) -> None:
        worker = _RUNNING.get(self.key)
        if worker is not None:
            worker.thread.wait()  # `finished` is emitted just before the thread's last step
            # Let go from the event loop, not from here: dropping the worker deletes this object, and Qt must
            # not have a receiver deleted inside its own event handler.
            QTimer.singleShot(0, functools.partial(_RUNNING.pop, self.key, None))


class Worker(QObject):
    """Runs ``work(worker)`` in its own QThread; reports progress, finishes with a result or an error. A started
    worker stays alive until its thread has ended, even when nothing else holds it."""

    progress = Signal(str, int, int, float)  # stage, done, total, seconds left (-1 unknown)
    message = Signal(str)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, work, parent=None):
        super().__init__(parent)
        self._work = work
        self.cancel_event = threading.Event()
        self.thread = QThread()
        self.moveToThread(self.thread)
        self.thread.started.connect(self._run)
        self._release = _Release(id(self))
        self.thread.finished.connect(self._release.release)
        self._started: dict[str, float] = {}

    def start(self) -> None:
        _RUNNING[id(self)] = self
        self.thread.start()

    def cancel(self) -> None:
        self.cancel_event.set()

    def report(self, stage: str, done: int, total: int) -> None:
        """Progress with an estimate of the time left from this stage's rate so far."""
        t0 = self._started.setdefault(stage, time.monotonic())
        elapsed = time.monotonic() - t0
        left = elapsed / done * (total - done) if done and total else -1.0
        self.progress.emit(stage, done, total, left)

    def _run(self) -> None:
        try:
            self.finished.emit(self._work(self))
        except Exception as exc:  # shown to the user, never a crash of the window
            self.failed.emit(f"{exc}\n\n{traceback.format_exc(limit=3)}")
        finally:
            self.thread.quit()

    def wait(self, ms: int = 60_000) -> bool:
        return self.thread.wait(ms)


def import_work(
    catalogue_path: Path,
    folder: Path,
    site: str | None,
    detector: str | None,
    model: str | None,
    species: str | None = None,
):
    """ingest -> detect -> embed -> suggest, as `herdbook import` does (``species``: its --species)."""

    def work(worker: Worker):
        from engine.ingest import import_folder
        from engine.pipeline import Pipeline
        from engine.reid import default_model_path

        with Catalogue(catalogue_path) as cat:
            summary = import_folder(
                cat,
                folder,
                site=site,
                species=species,
                cancel=worker.cancel_event,
                progress=lambda d, t, _p: worker.report("import", d, t),
            )
            result = {"ingest": summary, "pipeline": None}
            if summary.cancelled or not Path(model or default_model_path()).is_file():
                return result
            pipe = Pipeline(cat, detector=detector or "bundled", reid_model=model, species=species)
            result["pipeline"] = pipe.run(progress=worker.report, cancel=worker.cancel_event)
            return result

    return work


def train_work(catalogue_path: Path, out_dir: Path, budget_minutes: float, compare_model: Path | None = None):
    """Fine-tuning runs in a subprocess (torch stays out of the app's process). It reports JSON lines: stages,
    batches (elapsed against the budget drive the bar), epochs (shown as text) and the final figures."""

    def work(worker: Worker):
        cmd = [sys.executable, "-m", "herdbook", "train", "--catalogue", str(catalogue_path), "--out", str(out_dir)]
        cmd += ["--budget-minutes", str(budget_minutes), "--val-fraction", "0.3", "--progress-jsonl"]
        if compare_model:
            cmd += ["--compare-model", str(compare_model)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail, result = [], None
        budget = budget_minutes * 60
        for line in proc.stdout:
            if worker.cancel_event.is_set():
                proc.terminate()
                break
            try:
                event = json.loads(line)
            except ValueError:
                tail = (tail + [line])[-15:]  # warnings and errors: kept for the message if it fails
                continue
            if not isinstance(event, dict):
                continue
            if "stage" in event:
                worker.message.emit(event["stage"])
            elif "epoch_done" in event:
                worker.message.emit(epoch_summary(event["epoch_done"]))
            elif "batch" in event:
                worker.progress.emit("train", int(event.get("elapsed_s", 0)), int(budget), budget - event["elapsed_s"])
            elif "result" in event:
                result = event["result"]
        proc.wait()
        if worker.cancel_event.is_set():
            return None
        if proc.returncode != 0:
            raise RuntimeError("training failed:\n" + "".join(tail))
        return result

    return work


def reembed_work(catalogue_path: Path, model: Path):
    def work(worker: Worker):
        from engine.pipeline import Pipeline

        with Catalogue(catalogue_path) as cat:
            pipe = Pipeline(cat, reid_model=model)
            return {
                "embed": pipe.embed(progress=worker.report, cancel=worker.cancel_event),
                "suggest": pipe.suggest(progress=worker.report, cancel=worker.cancel_event),
            }

    return work
