"""Import, Export and Train dialogs. Work runs in desktop.workers; the dialogs only display it."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from PySide6.QtCore import QStorageInfo, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from engine.catalogue import Catalogue, CatalogueError, catalogue_files, catalogue_target
from engine.export import ExportError, export_camtrap_dp, export_sightings_csv

from .layout import fit_title
from .workers import Worker, import_work, reembed_work, train_work

STAGES = ("import", "detect", "embed", "suggest")


def removable_drives() -> list[str]:
    """Mounted volumes that look like SD cards or USB drives (under /media, /run/media, /Volumes, or not C:)."""
    out = []
    for vol in QStorageInfo.mountedVolumes():
        root = vol.rootPath()
        if (
            vol.isValid()
            and vol.isReady()
            and not vol.isRoot()
            and (root.startswith(("/media/", "/run/media/", "/Volumes/")) or (len(root) <= 3 and root[:1] not in "Cc/"))
        ):
            out.append(root)
    return out


def _fmt_left(seconds: float) -> str:
    return "" if seconds < 0 else f", about {int(seconds // 60)} min {int(seconds % 60)} s left"


DETECTOR_CHOICES = [
    ("find them in each photo (bundled detector)", "bundled"),
    ("each photo is already a crop of one animal", "whole-frame"),
    ("my own detector file (.onnx / .pt, e.g. MegaDetector)…", "choose"),
]


def known_species_names(catalogue_path: Path) -> list[str]:
    """The species of the catalogue's individuals and those the bundled model tells flanks of, for the Import
    dialog's list (a catalogue that does not exist yet is not created by looking)."""
    from engine.match import known_species
    from engine.reid import ModelCard, ModelError, default_model_path
    from engine.side import SideClassifier

    names: list[str] = []
    if Path(catalogue_path).is_file():
        with contextlib.suppress(CatalogueError, sqlite3.Error, OSError), Catalogue(catalogue_path) as cat:
            names += [r["species"] for r in cat.query("SELECT DISTINCT species FROM individuals ORDER BY species")]
    with contextlib.suppress(ModelError, OSError, ValueError):
        sides = SideClassifier.from_card(ModelCard.load(default_model_path()).data)
        names += list(sides.species) if sides else []
    return list(dict.fromkeys(n for n in names if known_species(n)))  # not 'unknown', 'animal' and the like


class ImportDialog(QDialog):
    done = Signal(object)

    def __init__(self, catalogue_path: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Import photos")
        fit_title(self)
        self.catalogue_path = catalogue_path
        self.worker: Worker | None = None
        self.result = None
        self.folder = QComboBox()
        self.folder.setEditable(True)
        self.folder.addItems(removable_drives())
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.site = QLineEdit(placeholderText="site / camera name (optional)")
        # The species, when the card holds one: its photos are matched within it, and for a species the model knows
        # the flank (engine.side), each detection's side is inferred from the photo.
        self.species = QComboBox()
        self.species.setEditable(True)
        self.species.addItems(["", *known_species_names(catalogue_path)])
        self.species.lineEdit().setPlaceholderText("species (optional: folders or tags may name it)")
        self.detector = QComboBox()
        for text, spec in DETECTOR_CHOICES:
            self.detector.addItem(text, spec)
        self.detector.activated.connect(self._detector_chosen)
        form = QFormLayout()
        form.addRow("Folder or card", row)
        form.addRow("Site", self.site)
        form.addRow("Species", self.species)
        form.addRow("Animals", self.detector)
        self.bars = {s: QProgressBar() for s in STAGES}
        for stage, bar in self.bars.items():
            bar.setFormat(f"{stage}: waiting")
            bar.setTextVisible(True)
            bar.setRange(0, 1)
            bar.setValue(0)
        self.eta = QLabel()
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.start_button = QPushButton("Import")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        for bar in self.bars.values():
            lay.addWidget(bar)
        lay.addWidget(self.eta)
        lay.addWidget(QLabel("Skipped or unreadable files:"))
        lay.addWidget(self.summary, 1)
        lay.addLayout(buttons)
        self.resize(640, 480)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of camera-trap photos")
        if folder:
            self.folder.setEditText(folder)

    def _detector_chosen(self, index: int) -> None:
        if self.detector.itemData(index) != "choose":
            return
        path, _ = QFileDialog.getOpenFileName(self, "Detector", "", "Detectors (*.onnx *.pt)")
        if path:
            self.detector.insertItem(index, Path(path).name, path)
            self.detector.setCurrentIndex(index)
        else:
            self.detector.setCurrentIndex(0)

    def start(self, folder: str | None = None) -> Worker:
        folder = folder or self.folder.currentText().strip()
        if not folder or not Path(folder).is_dir():
            self.eta.setText(f"{folder or '(nothing)'}: not a folder")
            return None
        self.worker = Worker(
            import_work(
                self.catalogue_path,
                Path(folder),
                self.site.text().strip() or None,
                self.detector.currentData(),
                None,
                species=self.species.currentText().strip() or None,
            )
        )
        self.worker.progress.connect(self._progress)
        self.worker.finished.connect(self._finished)
        self.worker.failed.connect(self._failed)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        if self.worker:
            self.worker.cancel()
            self.eta.setText("cancelling: finishing the current batch…")

    def _progress(self, stage: str, done: int, total: int, left: float) -> None:
        bar = self.bars.get(stage)
        if bar:
            bar.setFormat(f"{stage}: %v / %m")
            bar.setMaximum(max(total, 1))
            bar.setValue(done)
        self.eta.setText(f"{stage}: {done} of {total}{_fmt_left(left)}")

    def _join(self) -> None:
        """The worker's thread is quitting: wait for it, so no QThread outlives its dialog."""
        if self.worker is not None:
            self.worker.wait(10_000)

    def _finished(self, result) -> None:
        self._join()
        self.result = result
        ingest = result["ingest"]
        lines = ingest.lines()
        if result["pipeline"] is not None:
            lines += result["pipeline"].lines()[len(ingest.lines()) :]
        self.summary.setPlainText("\n".join(lines))
        self.eta.setText("cancelled: everything imported so far is kept" if ingest.cancelled else "finished")
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self.done.emit(result)

    def _failed(self, message: str) -> None:
        self._join()
        self.summary.setPlainText(message)
        self.eta.setText("import stopped by an error; the catalogue keeps what was committed")
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self.done.emit(None)


class ExportDialog(QDialog):
    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export sightings")
        self.setMinimumWidth(560)  # room for the messages and all three buttons
        fit_title(self)
        self.catalogue = catalogue
        self.format = QComboBox()
        self.format.addItems(["Sightings CSV", "Camtrap DP package"])
        self.species = QComboBox()
        self.species.addItems(
            ["(all)"]
            + [r["species"] for r in catalogue.query("SELECT DISTINCT species FROM individuals ORDER BY species")]
        )
        self.site = QComboBox()
        sites = catalogue.query("SELECT name FROM deployments ORDER BY name")
        self.site.addItems(["(all)"] + [r["name"] for r in sites])
        self.date_from, self.date_to = QDateEdit(), QDateEdit()
        for edit in (self.date_from, self.date_to):
            edit.setCalendarPopup(True)  # set by call: bool keyword properties upset PySide6's refcounts at exit
            edit.setDisplayFormat("yyyy-MM-dd")
        self.date_from.setSpecialValueText("(any)")
        self.date_to.setSpecialValueText("(any)")
        self.date_from.setDate(self.date_from.minimumDate())
        self.date_to.setDate(self.date_to.minimumDate())
        self.utc_offset = QLineEdit(placeholderText="+02:00 (Camtrap DP, for photos without one)")
        self.out = QLineEdit()
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        form = QFormLayout()
        for label, widget in (
            ("Format", self.format),
            ("Species", self.species),
            ("Site", self.site),
            ("From", self.date_from),
            ("To", self.date_to),
            ("UTC offset", self.utc_offset),
        ):
            form.addRow(label, widget)
        form.addRow("Save to", row)
        self.message = QLabel()
        self.message.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.clicked.connect(self.export)
        # Shown when the export needs something a deployment lacks (coordinates, a UTC offset).
        self.deployments_button = buttons.addButton("Edit deployments…", QDialogButtonBox.ButtonRole.ActionRole)
        self.deployments_button.clicked.connect(self.edit_deployments)
        self.deployments_button.hide()
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.message)
        lay.addWidget(buttons)

    def edit_deployments(self):
        from .deployments import DeploymentsDialog

        dialog = DeploymentsDialog(self.catalogue, self)
        dialog.show()
        return dialog

    def _browse(self) -> None:
        if self.format.currentIndex() == 0:
            path, _ = QFileDialog.getSaveFileName(self, "Sightings CSV", "sightings.csv", "CSV (*.csv)")
        else:
            path = QFileDialog.getExistingDirectory(self, "Folder for the Camtrap DP package")
        if path:
            self.out.setText(path)

    def filters(self) -> dict:
        def date(edit):
            return None if edit.date() == edit.minimumDate() else edit.date().toString("yyyy-MM-dd")

        return {
            "species": None if self.species.currentIndex() == 0 else self.species.currentText(),
            "site": None if self.site.currentIndex() == 0 else self.site.currentText(),
            "date_from": date(self.date_from),
            "date_to": date(self.date_to),
        }

    def export(self) -> bool:
        out = self.out.text().strip()
        if not out:
            self.message.setText("Choose where to save the export.")
            return False
        try:
            if self.format.currentIndex() == 0:
                report = export_sightings_csv(self.catalogue, out, **self.filters())
            else:
                report = export_camtrap_dp(
                    self.catalogue, out, utc_offset=self.utc_offset.text().strip() or None, **self.filters()
                )
        except (ExportError, OSError) as exc:
            self.message.setText(str(exc))
            self.deployments_button.setVisible(isinstance(exc, ExportError) and "deployment" in str(exc))
            return False
        self.deployments_button.hide()
        self.message.setText(f"Wrote {report.path}: " + ", ".join(f"{n} {k}" for k, n in report.rows.items()))
        return True


def trained_models_folder(catalogue_path: Path | str) -> Path:
    """Where a catalogue's fine-tuned models are kept: beside it, so they outlive a reboot and travel with it
    (for a central catalogue, in this machine's cache folder for it)."""
    base = catalogue_files(catalogue_path)
    return base.parent / f"{base.stem}.models"


def comparison_text(metrics: dict) -> str:
    """What the new model gained on the held-out individuals, against the current model on the same photos, and
    what it will not do that the current one does."""
    text = _comparison(metrics)
    if metrics.get("new_model_infers_sides") is False:
        text += (
            " The new model infers no flank from the photos (too few training photos of each side are"
            " known): its imports get a side only where someone records one."
        )
    return text


def _comparison(metrics: dict) -> str:
    new = (metrics.get("held_out") or {}).get("across_encounters")
    current = metrics.get("current_model_held_out")
    if not new:
        return "No held-out individuals to measure on (too few confirmed individuals): accept with care."
    n = new.get("queries")
    head = "On the confirmed individuals held out of training (never seen by it), across encounters"
    head += f" ({n} photos as queries):" if n else ":"
    line = f"new model rank-1 {new['rank1']:.1%}, rank-5 {new.get('rank5', float('nan')):.1%}, mAP {new['mAP']:.1%}"
    if not current:
        return f"{head} {line}."
    cur = current["across_encounters"]
    appearance = (
        f"{head} {line}; current model ({current['model']}) rank-1 {cur['rank1']:.1%}, "
        f"rank-5 {cur.get('rank5', float('nan')):.1%}, mAP {cur['mAP']:.1%} (appearance alone, both)."
    )
    mine, theirs = metrics.get("new_model_suggestions_held_out"), current.get("suggestions")
    if mine and theirs:  # what the biologist will see: each model's suggestions as the app makes them
        how = "with its coat-pattern verification" if current.get("fused") else "by appearance"
        gain = mine["top1"] - theirs["top1"]
        verdict = (
            f"the new model puts the right individual first {gain:+.1%} more often."
            if gain > 0
            else "the new model's suggestions are no better: keeping the current model is advised."
        )
        mine_how = (
            "with its coat-pattern verification, refitted on the training individuals"
            if metrics.get("new_model_fused")
            else "appearance alone: too few individuals seen in two encounters to fit its coat-pattern fusion"
        )
        return (
            f"{appearance} Suggestions as the app makes them: new model top-1 {mine['top1']:.1%}, top-5 "
            f"{mine['top5']:.1%} ({mine_how}); current model "
            f"top-1 {theirs['top1']:.1%}, top-5 {theirs['top5']:.1%} ({how}): {verdict}"
        )
    gain = new["rank1"] - cur["rank1"]
    verdict = (
        f"it finds the right individual first {gain:+.1%} more often."
        if gain > 0
        else "it is no better than the current model on these individuals: keeping the current one is advised."
    )
    return f"{appearance} {verdict}"


class TrainDialog(QDialog):
    """Fine-tune on the confirmed individuals; say what the new model gained over the current one on held-out
    individuals; switch the catalogue to it only when accepted. The model is kept beside the catalogue."""

    model_switched = Signal(str)

    def __init__(self, catalogue_path: Path, parent=None, current_model: Path | None = None):
        super().__init__(parent)
        self.setWindowTitle("Train on confirmed individuals")
        fit_title(self)
        self.setMinimumWidth(640)
        self.catalogue_path = catalogue_target(catalogue_path)
        self.current_model = current_model
        self.out_dir: Path | None = None
        self.budget = QDoubleSpinBox(minimum=0.5, maximum=600, value=20, suffix=" min")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.metrics = QLabel()
        self.metrics.setWordWrap(True)
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.accept_button = QPushButton("Use the new model")
        self.accept_button.setEnabled(False)
        self.accept_button.clicked.connect(self.switch_model)
        self.progress = QProgressBar()
        self.progress.setFormat("%p% of the time budget")
        form = QFormLayout()
        form.addRow("Time budget (whole run)", self.budget)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.log, 1)
        lay.addWidget(self.metrics)
        lay.addWidget(self.progress)
        row = QHBoxLayout()
        row.addStretch(1)
        for button in (self.start_button, self.cancel_button, self.accept_button):
            row.addWidget(button)
        lay.addLayout(row)
        self.worker: Worker | None = None
        try:
            import torch  # noqa: F401
        except ImportError:
            self.start_button.setEnabled(False)
            self.log.setPlainText("Training needs the train extra: pip install 'herdbook[train]'.")

    def start(self) -> None:
        self.out_dir = trained_models_folder(self.catalogue_path) / time.strftime("train-%Y%m%d-%H%M%S")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log.appendPlainText(f"training into {self.out_dir}")
        self.worker = Worker(train_work(self.catalogue_path, self.out_dir, self.budget.value(), self.current_model))
        self.worker.message.connect(self.log.appendPlainText)
        self.worker.progress.connect(self._train_progress)
        self.worker.finished.connect(self._finished)
        self.worker.failed.connect(self._failed)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.log.appendPlainText("cancelling…")

    def _train_progress(self, _stage: str, done: int, total: int, _left: float) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(min(done, total))

    def _failed(self, message: str) -> None:
        self.log.appendPlainText(message)
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)

    def _finished(self, metrics) -> None:
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)
        if not metrics or metrics.get("cancelled"):
            self.log.appendPlainText("training cancelled; the current model stays")
            return
        self.progress.setValue(self.progress.maximum())
        self.metrics.setText(comparison_text(metrics) + " Use it?")
        self.accept_button.setEnabled(True)

    def switch_model(self) -> None:
        model = next(self.out_dir.glob("*.onnx"))
        self.worker = Worker(reembed_work(self.catalogue_path, model))
        self._switched_model = model
        # Bound methods, not lambdas: Qt runs them in the dialog's (UI) thread. Lambdas ran in the worker's
        # thread, so the bar never moved and the window refreshed from the wrong thread.
        self.worker.progress.connect(self._reembed_progress)
        self.worker.finished.connect(self._reembed_done)
        self.progress.setFormat("re-embedding %p%")
        self.progress.setValue(0)
        self.worker.start()

    def _reembed_progress(self, stage: str, done: int, total: int, _left: float) -> None:
        if total <= 0:  # a stage with nothing to do (no detection waiting for suggestions) leaves the bar alone;
            return  # it reset a finished re-embedding to 0 % before
        self.progress.setFormat(f"{'re-embedding' if stage == 'embed' else stage} %p%")
        self.progress.setMaximum(total)
        self.progress.setValue(done)

    def _reembed_done(self, _result) -> None:
        self.model_switched.emit(str(self._switched_model))
