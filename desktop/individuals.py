"""Individuals: search, gallery by side, sighting history (table, timeline, offline map), rename, merge, and the
merges proposed across stations after a sync (engine.merge_proposals), reviewed from the keyboard."""

from __future__ import annotations

import getpass
from datetime import datetime

from PySide6.QtCore import QPointF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine import decisions
from engine.catalogue import Catalogue

from .images import pixmap, thumbnail_pixmap
from .layout import headers_in_full
from .models import IndividualsModel, SightingsModel
from .workers import Worker


class MapView(QWidget):
    """Sightings on a plain equirectangular projection around their bounding box: no tile server needed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[tuple[float, float, str]] = []
        self.setMinimumSize(QSize(320, 240))

    def set_points(self, rows: list[dict]) -> None:
        self.points = [
            (r["longitude"], r["latitude"], r["taken_at"] or "")
            for r in rows
            if r["latitude"] is not None and r["longitude"] is not None
        ]
        self.update()

    def paintEvent(self, _event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#f4f1e8"))
        if not self.points:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no GPS positions for these sightings")
            return
        lons, lats = [x for x, _, _ in self.points], [y for _, y, _ in self.points]
        pad = max(max(lons) - min(lons), max(lats) - min(lats), 0.002) * 0.15
        x0, x1, y0, y1 = min(lons) - pad, max(lons) + pad, min(lats) - pad, max(lats) + pad
        w, h = self.width() - 20, self.height() - 40
        p.setPen(QPen(QColor("#999"), 1, Qt.PenStyle.DashLine))
        p.drawRect(10, 10, w, h)

        def to_xy(lon, lat):
            return QPointF(10 + (lon - x0) / (x1 - x0) * w, 10 + (y1 - lat) / (y1 - y0) * h)

        p.setPen(QPen(QColor("#c0392b"), 1))
        p.setBrush(QColor("#c0392b"))
        ordered = sorted(self.points, key=lambda t: t[2])
        for a, b in zip(ordered, ordered[1:], strict=False):
            p.drawLine(to_xy(a[0], a[1]), to_xy(b[0], b[1]))
        for lon, lat, _ in ordered:
            p.drawEllipse(to_xy(lon, lat), 4, 4)
        p.setPen(QColor("#333"))
        p.drawText(10, self.height() - 12, f"lat {y0:.4f}…{y1:.4f}   lon {x0:.4f}…{x1:.4f}   ({len(ordered)} fixes)")


class TimelineView(QWidget):
    """One tick per sighting along the time axis."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.times: list[datetime] = []
        self.setMinimumHeight(60)

    def set_rows(self, rows: list[dict]) -> None:
        self.times = []
        for r in rows:
            try:
                self.times.append(datetime.fromisoformat(r["taken_at"]).replace(tzinfo=None))
            except (TypeError, ValueError):
                continue
        self.update()

    def paintEvent(self, _event):  # noqa: N802
        p = QPainter(self)
        mid = self.height() // 2
        p.setPen(QPen(QColor("#555"), 1))
        if not self.times:  # words only: an axis line would strike through them
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no dated sightings")
            return
        p.drawLine(10, mid, self.width() - 10, mid)
        t0, t1 = min(self.times), max(self.times)
        span = max((t1 - t0).total_seconds(), 1.0)
        p.setPen(QPen(QColor("#2c7a7b"), 3))
        for t in self.times:
            x = 10 + (t - t0).total_seconds() / span * (self.width() - 20)
            p.drawLine(int(x), mid - 12, int(x), mid + 12)
        p.setPen(QColor("#333"))
        p.drawText(10, self.height() - 4, t0.date().isoformat())
        p.drawText(self.width() - 90, self.height() - 4, t1.date().isoformat())


class IndividualsWidget(QWidget):
    def __init__(self, catalogue: Catalogue, who: str | None = None, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.who = who or getpass.getuser()
        self.model = IndividualsModel(catalogue, self)
        self.sightings = SightingsModel(catalogue, self)
        self.search = QLineEdit(placeholderText="search code, name or species")
        self.search.textChanged.connect(self._filter)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        headers_in_full(self.table)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        rename = QPushButton("Rename…")
        rename.clicked.connect(self.rename_selected)
        merge = QPushButton("Merge selected…")
        merge.clicked.connect(self.merge_selected)
        unmerge = QPushButton("Undo merge")
        unmerge.clicked.connect(self.undo_merge)
        propose = QPushButton("Proposed merges")
        propose.setToolTip("individuals of two stations that look like one animal (after a sync)")
        propose.clicked.connect(self.find_proposals)
        self.proposals = ProposalList(self)
        self.proposals.hide()
        self.worker: Worker | None = None
        self.status = QLabel()
        self.ask_merge = ask_merge  # replaceable prompt (tests answer it)
        left = QVBoxLayout()
        left.addWidget(self.search)
        left.addWidget(self.table, 1)
        row = QHBoxLayout()
        row.addWidget(rename)
        row.addWidget(merge)
        row.addWidget(unmerge)
        row.addWidget(propose)
        left.addLayout(row)
        left.addWidget(self.proposals)
        left.addWidget(self.status)
        self.gallery = QListWidget(viewMode=QListWidget.ViewMode.IconMode, iconSize=QSize(140, 100))
        self.history = QTableView()
        self.history.setModel(self.sightings)
        headers_in_full(self.history)
        self.timeline = TimelineView()
        self.map = MapView()
        tabs = QTabWidget()
        tabs.addTab(self.gallery, "Gallery")
        tabs.addTab(self.history, "Sightings")
        tabs.addTab(self.map, "Map")
        right = QVBoxLayout()
        self.title = QLabel()
        right.addWidget(self.title)
        right.addWidget(tabs, 1)
        right.addWidget(self.timeline)
        lw, rw = QWidget(), QWidget()
        lw.setLayout(left)
        rw.setLayout(right)
        split = QSplitter()
        split.addWidget(lw)
        split.addWidget(rw)
        split.setStretchFactor(1, 2)
        lw.setMinimumWidth(440)  # the list's five columns in full (code, name, species, sightings, last seen)
        lay = QVBoxLayout(self)
        lay.addWidget(split)
        self.model.reload()

    def _filter(self, text: str) -> None:
        self.model.filter = text
        self.model.reload()

    def selected_ids(self) -> list[int]:
        return [self.model.rows[i.row()]["id"] for i in self.table.selectionModel().selectedRows()]

    def _selected(self, *_):
        ids = self.selected_ids()
        if ids:
            self.show_individual(ids[0])

    def show_individual(self, individual_id: int) -> None:
        self.sightings.load(individual_id)
        rows = self.sightings.rows
        ind = self.catalogue.db["individuals"].get(individual_id)
        self.title.setText(f"<b>{ind['code']}</b> {ind['name'] or ''} · {ind['species']} · {len(rows)} sightings")
        self.gallery.clear()
        for r in sorted(rows, key=lambda r: (r["viewpoint"] or "", r["taken_at"] or ""))[:60]:
            item = QListWidgetItem(" · ".join(v for v in (r["viewpoint"] or "side ?", (r["taken_at"] or "")[:10]) if v))
            icon = pixmap(r["path"], (r["x"], r["y"], r["w"], r["h"]) if r["w"] else None, 140)
            if icon.isNull():  # a photo of another station: the crop that came with the sync
                crop = self.catalogue.db.execute(
                    "SELECT jpeg FROM thumbnails WHERE detection_id = ?", [r["detection_id"]]
                ).fetchone()
                icon = thumbnail_pixmap(crop[0], 140) if crop else icon
            item.setIcon(icon)
            self.gallery.addItem(item)
        self.timeline.set_rows(rows)
        self.map.set_points(rows)

    def rename_selected(self) -> None:
        ids = self.selected_ids()
        if not ids:
            return
        ind = self.catalogue.db["individuals"].get(ids[0])
        name, ok = QInputDialog.getText(self, "Rename", f"Name for {ind['code']}:", text=ind["name"] or "")
        if ok:
            self.catalogue.db["individuals"].update(ids[0], {"name": name.strip() or None})
            self.model.reload()

    def merge_selected(self) -> None:
        """Two records that turn out to be one animal: the reviewer chooses which survives; the merge is a
        logged decision ("Undo merge" takes it back) and both histories stay."""
        ids = self.selected_ids()
        if len(ids) != 2:
            QMessageBox.information(self, "Merge", "Select exactly two individuals to merge.")
            return
        inds = [self.catalogue.db["individuals"].get(i) for i in ids]
        labels = [f"keep {i['code']} ({i['species']}), merge {o['code']} into it" for i, o in (inds, inds[::-1])]
        choice, ok = self.ask_merge(self, labels)
        if not ok:
            return
        keep, gone = (inds[0], inds[1]) if choice == labels[0] else (inds[1], inds[0])
        try:
            decisions.merge(self.catalogue, keep["id"], gone["id"], self.who)
        except decisions.DecisionError as exc:
            QMessageBox.warning(self, "Merge", str(exc))
            return
        self.model.reload()
        self.show_individual(keep["id"])
        self.status.setText(f"merged {gone['code']} into {keep['code']} (Undo merge takes it back)")

    def undo_merge(self) -> None:
        row = decisions.undo_merge(self.catalogue, self.who)
        self.model.reload()
        if row is None:
            self.status.setText("no merge of yours to undo")
            return
        kept, gone = (self.catalogue.db["individuals"].get(row[k])["code"] for k in ("kept_id", "merged_id"))
        self.status.setText(f"undone: merge of {gone} into {kept}")
        self.show_individual(row["merged_id"])

    # -- merges proposed across stations ---------------------------------------------------------------
    def find_proposals(self) -> None:
        """Compute the proposals in a worker thread (about a second per individual): the window stays live. A
        second press while it runs does nothing (a dropped QThread that still runs would end the app)."""
        from engine.merge_proposals import ProposalsCancelled, propose_for_current_model

        if self.worker is not None and self.worker.thread.isRunning():
            return
        target = self.catalogue.target
        self.status.setText("looking for animals two stations named apart…")

        def work(worker: Worker):
            def progress(stage: str, done: int, total: int) -> None:
                if worker.cancel_event.is_set():
                    raise ProposalsCancelled("merge proposals cancelled")
                worker.report(stage, done, total)

            with Catalogue(target) as own:  # the thread's own connection
                try:
                    return propose_for_current_model(own, progress=progress)
                except ProposalsCancelled:
                    return None

        self.worker = Worker(work)
        # Bound methods, not lambdas: Qt runs them in this widget's (UI) thread; a lambda runs in the worker's.
        self.worker.progress.connect(self._proposal_progress)
        self.worker.finished.connect(self.show_proposals)
        self.worker.failed.connect(self._proposals_failed)
        self.worker.start()

    def _proposal_progress(self, _stage: str, done: int, total: int, _left: float) -> None:
        self.status.setText(f"compared {done} of {total}")

    def _proposals_failed(self, text: str) -> None:
        self.status.setText(f"merge proposals failed: {text.splitlines()[0]}")

    def stop_work(self) -> None:
        """Cancel a proposal search and wait for its thread (the window is closing)."""
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait(10_000)

    def show_proposals(self, proposals: list | None) -> None:
        self.worker.wait()  # its thread is quitting; the next press then finds it ended
        if proposals is None:
            self.status.setText("merge proposals cancelled")
            return
        self.proposals.set_proposals(proposals)
        self.proposals.setVisible(bool(proposals))
        self.proposals.setFocus()
        self.status.setText(
            f"{len(proposals)} proposed merges: M merges the selected pair, X dismisses it, U undoes your last merge"
            if proposals
            else "no proposed merges"
        )

    def accept_proposal(self, proposal) -> None:
        try:
            decisions.merge(self.catalogue, proposal.keep_id, proposal.merge_id, self.who)
        except decisions.DecisionError as exc:
            self.status.setText(str(exc))
            return
        self.model.reload()
        self.show_individual(proposal.keep_id)
        self.status.setText(f"merged {proposal.merge_code} into {proposal.keep_code} (U undoes it)")


class ProposalList(QListWidget):
    """Proposed merges, one a row, decided from the keyboard as suggestions are: M merge, X dismiss, U undo."""

    def __init__(self, owner: IndividualsWidget):
        super().__init__()
        self.owner = owner
        self.items_by_row: list = []
        self.setMaximumHeight(160)

    def set_proposals(self, proposals: list) -> None:
        self.clear()
        self.items_by_row = list(proposals)
        for p in proposals:
            self.addItem(f"{p.keep_code} ← {p.merge_code} ({p.species}): {p.reason}")
        if proposals:
            self.setCurrentRow(0)

    def current_proposal(self):
        row = self.currentRow()
        return self.items_by_row[row] if 0 <= row < len(self.items_by_row) else None

    def _drop_current(self) -> None:
        row = self.currentRow()
        self.takeItem(row)
        del self.items_by_row[row]

    def keyPressEvent(self, event):  # noqa: N802 (Qt API)
        key, proposal = event.key(), self.current_proposal()
        if key == Qt.Key.Key_M and proposal is not None:
            self.owner.accept_proposal(proposal)
            self._drop_current()
        elif key == Qt.Key.Key_X and proposal is not None:
            self._drop_current()
            self.owner.status.setText(f"dismissed: {proposal.keep_code} and {proposal.merge_code}")
        elif key == Qt.Key.Key_U:
            self.owner.undo_merge()
        else:
            super().keyPressEvent(event)


def ask_merge(parent: QWidget, labels: list[str]) -> tuple[str, bool]:
    return QInputDialog.getItem(parent, "Merge individuals", "Which individual survives?", labels, 0, False)
