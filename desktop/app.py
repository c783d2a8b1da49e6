"""The main window: catalogue overview, review queue, individuals; import, export and training dialogs.

`herdbook app [--catalogue CAT] [--screenshot FILE]` starts it; with --screenshot it renders the window
offscreen to a PNG and exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.catalogue import Catalogue, CatalogueError, catalogue_files, catalogue_target, default_catalogue_path
from engine.pipeline import open_count
from engine.reid import Embedder, ModelError, default_model_path
from engine.resources import resources_dir

from .deployments import DeploymentsDialog
from .dialogs import ExportDialog, ImportDialog, TrainDialog
from .heartbeat import keep_startup_out_of_collections
from .individuals import IndividualsWidget
from .review import ReviewWidget
from .workers import Worker


def model_status(model_path: Path | None = None) -> tuple[str, str]:
    """(model name and version, compute device) as the status bar shows them."""
    try:
        emb = Embedder(model_path)
        return f"{emb.card['name']} {emb.card['version']}", emb.device
    except ModelError as exc:
        return f"no model ({exc})", "CPU"


def overview_figures(catalogue: Catalogue) -> dict:
    """What the Overview tab says. Counting is a pass over each table on PostgreSQL (0.5 s of statements in the
    server's log at a million detections, after VACUUM), so the tab has these counted in a worker thread."""
    last = catalogue.query("SELECT source, finished_at, status FROM imports ORDER BY id DESC LIMIT 1")
    return catalogue.counts() | {
        "open": open_count(catalogue),
        "unreadable": catalogue.db.execute("SELECT count(*) FROM media WHERE status = 'error'").fetchone()[0],
        "last_import": last[0] if last else None,
    }


class Overview(QWidget):
    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.stale = True
        self.counting: Worker | None = None
        self.again = False
        lay = QVBoxLayout(self)
        lay.addWidget(self.label)
        lay.addStretch(1)

    def showEvent(self, event):  # noqa: N802 (Qt API)
        if self.stale:
            self.reload()
        super().showEvent(event)

    def reload(self) -> None:
        """Re-count, now when shown, else when next shown (a decision key must not pay for counting a
        season's catalogue while the overview is hidden); the counting runs in a worker thread, and the figures
        shown until it ends are the last ones."""
        if not self.isVisible():
            self.stale = True
            return
        self.stale = False
        if self.counting is not None and self.counting.thread.isRunning():
            self.again = True  # count once more when this one ends
            return
        if not self.label.text():
            self.label.setText(f"<h2>{self.catalogue.display_name}</h2><p>counting…</p>")
        target = self.catalogue.target

        def work(_worker: Worker) -> dict:
            with Catalogue(target) as own:  # the thread's own connection
                return overview_figures(own)

        self.counting = Worker(work)
        self.counting.finished.connect(self.show_figures)  # bound methods: run in the UI thread
        self.counting.failed.connect(self.show_failure)
        self.counting.start()

    def show_failure(self, text: str) -> None:
        self.label.setText(f"counting failed: {text.splitlines()[0]}")

    def show_figures(self, f: dict) -> None:
        self.counting.wait()  # its thread is quitting
        last = f["last_import"]
        last_text = f"{last['source']} ({last['status']}, {last['finished_at'] or '—'})" if last else "none yet"
        self.label.setText(
            f"<h2>{self.catalogue.display_name}</h2>"
            f"<p><b>{f['media']}</b> photos ({f['unreadable']} unreadable) · <b>{f['detections']}</b> detections · "
            f"<b>{f['individuals']}</b> individuals · <b>{f['sightings']}</b> confirmed sightings · "
            f"<b>{f['open']}</b> suggestions waiting</p><p>Last import: {last_text}</p>"
            "<p>Ctrl+I import · Ctrl+E export · Ctrl+T train · open the Review tab and decide with the keys.</p>"
        )
        if self.again:
            self.again = False
            self.reload()

    def stop_work(self) -> None:
        """The window is closing: let a count in progress end (it only reads)."""
        if self.counting is not None:
            self.counting.wait(10_000)


class MainWindow(QMainWindow):
    def __init__(self, catalogue_path: str | Path, parent=None):
        super().__init__(parent)
        self.settings = QSettings("Herdbook", "Herdbook")
        self.catalogue_path = catalogue_target(catalogue_path)  # a file, or a central catalogue's URL
        self.catalogue = Catalogue(self.catalogue_path)
        self.setWindowTitle(f"Herdbook — {self.catalogue.display_name}")
        self.settings.setValue("last_catalogue", str(self.catalogue_path))
        self.tabs = QTabWidget()
        self.overview = Overview(self.catalogue)
        self.review = ReviewWidget(self.catalogue)
        self.individuals = IndividualsWidget(self.catalogue)
        self.tabs.addTab(self.overview, "Overview")
        self.tabs.addTab(self.review, "Review")
        self.tabs.addTab(self.individuals, "Individuals")
        self.setCentralWidget(self.tabs)
        self.review.decided.connect(lambda _t: self.overview.reload())
        self.review.box_added.connect(self._embed_and_suggest)
        self.review.suggestions_stale.connect(self._embed_and_suggest)
        self._actions()
        model, device = model_status()
        self.status_label = QLabel(f"catalogue {self.catalogue.location} · model {model} · compute {device}")
        self.statusBar().addPermanentWidget(self.status_label)
        self.workers: list[Worker] = []
        self._suggesting: Worker | None = None  # the worker embedding and suggesting after a review's change
        self._suggest_again = False
        self.resize(1280, 800)

    def _actions(self) -> None:
        menu = self.menuBar().addMenu("&Catalogue")
        for text, key, slot in (
            ("&Open or create catalogue…", "Ctrl+O", self.open_catalogue),
            ("&Import photos…", "Ctrl+I", self.open_import),
            ("&Export sightings…", "Ctrl+E", self.open_export),
            ("&Deployments…", "Ctrl+D", self.open_deployments),
            ("&Train on confirmed individuals…", "Ctrl+T", self.open_train),
            ("&Quit", "Ctrl+Q", self.close),
        ):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(key))
            action.triggered.connect(slot)
            menu.addAction(action)
        # A click on the Review tab puts the keys there: the first key press decides, it is not swallowed.
        self.tabs.currentChanged.connect(lambda _i: self.tabs.currentWidget().setFocus())

    def show_error(self, text: str) -> None:
        QMessageBox.critical(self, "Herdbook", text)

    def open_catalogue(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Open or create a catalogue",
            str(catalogue_files(self.catalogue_path).parent),
            "Herdbook catalogue (*.sqlite)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            try:
                replacement = MainWindow(path)
            except CatalogueError as exc:
                self.show_error(str(exc))
                return
            replacement.show()
            self.close()

    def open_import(self) -> ImportDialog:
        dialog = ImportDialog(self.catalogue_path, self)
        dialog.done.connect(lambda _r: self.refresh())
        dialog.show()
        return dialog

    def open_export(self) -> ExportDialog:
        dialog = ExportDialog(self.catalogue, self)
        dialog.show()
        return dialog

    def open_deployments(self) -> DeploymentsDialog:
        dialog = DeploymentsDialog(self.catalogue, self)
        dialog.show()
        return dialog

    def open_train(self) -> TrainDialog:
        dialog = TrainDialog(self.catalogue_path, self)
        dialog.model_switched.connect(
            lambda m: (
                self.refresh(),
                self.status_label.setText(
                    f"catalogue {self.catalogue.location} · model {m} · compute {model_status(Path(m))[1]}"
                ),
            )
        )
        dialog.show()
        return dialog

    def _embed_and_suggest(self, _detection_id: int) -> None:
        """Embed what waits (a box drawn by hand) and make the suggestions that are pending (a side or species
        corrected after them) in a worker. One at a time: a request meanwhile runs once more when it ends, so
        pressing F three times does not race three workers over the same detections."""
        from .workers import reembed_work

        if self._suggesting is not None:
            self._suggest_again = True
            return
        worker = Worker(reembed_work(self.catalogue_path, default_model_path()))
        # A bound method of this window (not a lambda): Qt then runs it in the window's thread. A lambda ran
        # in the worker's thread and used the window's SQLite connection from there.
        worker.finished.connect(self._suggesting_done)
        worker.failed.connect(self._suggesting_failed)
        self.workers.append(worker)
        self._suggesting = worker
        worker.start()

    def _suggesting_failed(self, text: str) -> None:
        self.statusBar().showMessage(f"embedding or suggesting failed: {text.splitlines()[0]}")
        self._suggesting_done(None)

    def _suggesting_done(self, _result) -> None:
        self._suggesting = None
        self.refresh()
        if self._suggest_again:
            self._suggest_again = False
            self._embed_and_suggest(0)

    def refresh(self) -> None:
        self.overview.reload()
        self.review.reload()
        self.individuals.model.reload()

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        for worker in self.workers:
            worker.cancel()
            worker.wait(10_000)
        self.individuals.stop_work()
        self.overview.stop_work()
        self.catalogue.close()
        super().closeEvent(event)


def default_catalogue() -> Path | str:
    """The catalogue the app had open last, while it still exists; else the one default of CLI and app."""
    last = QSettings("Herdbook", "Herdbook").value("last_catalogue")
    if last and catalogue_target(last) == last:  # a central catalogue's URL: the server says if it is there
        return last
    return Path(last) if last and Path(last).is_file() else default_catalogue_path()


def ask_for_catalogue(problem: str, tried: Path) -> Path | None:
    """Say why the catalogue cannot be used and let the user open or create another (None: give up)."""
    QMessageBox.warning(None, "Herdbook", f"{problem}\n\nChoose another catalogue, or type a new name to create one.")
    path, _ = QFileDialog.getSaveFileName(
        None,
        "Open or create a catalogue",
        str(tried.parent if tried.parent.is_dir() else Path.home()),
        "Herdbook catalogue (*.sqlite)",
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    return Path(path) if path else None


def open_window(path: Path, choose=ask_for_catalogue) -> MainWindow | None:
    """The main window on ``path``; an unusable file (not a catalogue, a newer schema, an unwritable folder) asks
    for another instead of ending the app."""
    while True:
        try:
            return MainWindow(path)
        except CatalogueError as exc:
            path = choose(str(exc), catalogue_files(path))
            if path is None:
                return None


def run(catalogue: str | None = None, screenshot: str | None = None, tab: int = 0) -> int:
    if screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setWindowIcon(QIcon(str(resources_dir() / "icons" / "herdbook.png")))
    if screenshot:
        try:
            window = MainWindow(catalogue or default_catalogue())
        except CatalogueError as exc:
            print(f"herdbook: error: {exc}", file=sys.stderr)
            return 1
    else:
        window = open_window(Path(catalogue) if catalogue else default_catalogue())
        if window is None:
            return 1
    window.tabs.setCurrentIndex(tab)
    window.show()
    if screenshot:
        if window.overview.counting is not None:
            window.overview.counting.wait()  # the picture shows the figures, not "counting…"
        app.processEvents()
        window.grab().save(screenshot)
        window.close()
        return 0
    QTimer.singleShot(0, window.raise_)
    keep_startup_out_of_collections()
    return app.exec()
