"""The review queue: the query crop beside its top-5 candidates; decisions from the keyboard.

Keys: 1-5 confirm that candidate, N new individual, R reject all, S skip, U undo, Left/Right move,
Z compare query and candidate at full resolution, B draw a box by hand on the photo.
Every decision is a row in the catalogue's append-only log, with who and when.
"""

from __future__ import annotations

import getpass
import itertools
import json
import sqlite3
from collections.abc import Callable

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QRubberBand,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from engine import decisions
from engine.catalogue import Catalogue
from engine.imageio import ImageError
from engine.pipeline import explain_match

from .images import pixmap
from .layout import fit_title
from .models import ReviewQueueModel


def ask_new_individual(parent: QWidget, suggestion: str) -> str | None:
    code, ok = QInputDialog.getText(parent, "New individual", "Code for the new individual:", text=suggestion)
    return code.strip() if ok and code.strip() else None


def ask_species(parent: QWidget, suggestion: str) -> str | None:
    text, ok = QInputDialog.getText(parent, "Species", "Species shown in this detection:", text=suggestion)
    return text.strip() if ok and text.strip() else None


def ask_confirm_existing(parent: QWidget, existing: decisions.ExistingIndividual) -> bool:
    answer = QMessageBox.question(
        parent,
        "Individual exists",
        f"{existing.code} ({existing.species}) is already in the catalogue.\n\n"
        f"Confirm this detection as {existing.code}?",
    )
    return answer == QMessageBox.StandardButton.Yes


class CandidateCard(QFrame):
    def __init__(self, key: int, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.photo = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.photo.setFixedSize(QSize(220, 150))
        self.text = QLabel()
        self.text.setWordWrap(True)
        # Room for the code, the reason (two lines) and where it was last seen: a squeezed card drew its text
        # over the photo.
        self.text.setMinimumHeight(self.text.fontMetrics().lineSpacing() * 5)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"<b>[{key}]</b>"))
        lay.addWidget(self.photo)
        lay.addWidget(self.text)

    def show_candidate(self, cand: dict | None, info: dict | None) -> None:
        if cand is None:
            self.photo.clear()
            self.text.setText("")
            self.setEnabled(False)
            return
        self.setEnabled(True)
        if info and info.get("path"):
            self.photo.setPixmap(pixmap(info["path"], info.get("box"), 220))
        name = f" “{cand['name']}”" if cand.get("name") else ""
        seen = f"<br>last seen {info['taken_at'] or '?'} at {info['site'] or '?'}" if info else ""
        reason = cand.get("reason") or f"score {cand['score']:.3f}"
        self.text.setText(f"<b>{cand['code']}</b>{name}<br>{reason}{seen}")


class PhotoView(QLabel):
    """The full photo, scaled; in box mode a drag draws a rectangle, reported in photo pixels."""

    box_drawn = Signal(tuple)

    def __init__(self, parent=None):
        super().__init__(parent, alignment=Qt.AlignmentFlag.AlignCenter)
        self.box_mode = False
        self.scale = 1.0
        self._origin = QPoint()
        self._band = QRubberBand(QRubberBand.Shape.Rectangle, self)

    def show_photo(self, path: str, max_side: int, full_width: int) -> None:
        pm = pixmap(path, None, max_side)
        self.setPixmap(pm)
        self.setFixedSize(pm.size())
        self.scale = full_width / max(pm.width(), 1)

    def mousePressEvent(self, event):  # noqa: N802 (Qt API)
        if self.box_mode:
            self._origin = event.position().toPoint()
            self._band.setGeometry(QRect(self._origin, QSize()))
            self._band.show()

    def mouseMoveEvent(self, event):  # noqa: N802
        if self.box_mode:  # the rectangle follows the pointer to the photo's edge, never past it
            end = event.position().toPoint()
            end = QPoint(min(max(end.x(), 0), self.width() - 1), min(max(end.y(), 0), self.height() - 1))
            self._band.setGeometry(QRect(self._origin, end).normalized())

    def mouseReleaseEvent(self, event):  # noqa: N802
        if self.box_mode:
            r = self._band.geometry()
            self._band.hide()
            if r.width() > 4 and r.height() > 4:
                self.box_drawn.emit(
                    (r.x() * self.scale, r.y() * self.scale, r.width() * self.scale, r.height() * self.scale)
                )


OTHER_PHOTOS = 8  # a candidate's other photos shown in the compare view


class CompareDialog(QDialog):
    """Query and candidate side by side at full resolution, each scrollable; also where boxes are drawn."""

    def __init__(self, query: dict, candidate_info: dict | None, full_width: int, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Compare at full resolution: the query on the left, the best candidate on the right")
        fit_title(self)
        self.column = QVBoxLayout(self)  # the coat-pattern match above, the two photos side by side below
        lay = QHBoxLayout()
        self.column.addLayout(lay, 1)
        self.query_view = PhotoView()
        self.query_view.show_photo(query["path"], 1600, full_width)
        for view in (self.query_view,):
            area = QScrollArea()
            area.setWidget(view)
            lay.addWidget(area)
        self.other_photos: list[QLabel] = []
        if candidate_info:
            other = QLabel()
            other.setPixmap(pixmap(candidate_info["path"], candidate_info.get("box"), 1600))
            area = QScrollArea()
            area.setWidget(other)
            column = QVBoxLayout()
            column.addWidget(area, 1)
            if candidate_info.get("others"):
                column.addWidget(QLabel(f"Other photos of {candidate_info.get('code') or 'this candidate'}:"))
                strip, row = QWidget(), QHBoxLayout()
                for photo in candidate_info["others"]:
                    thumb = QLabel()
                    thumb.setPixmap(pixmap(photo["path"], photo["box"], 150))
                    thumb.setToolTip(photo["caption"])
                    cell = QVBoxLayout()
                    cell.addWidget(thumb)
                    cell.addWidget(QLabel(photo["caption"]))
                    row.addLayout(cell)
                    self.other_photos.append(thumb)
                strip.setLayout(row)
                scroll = QScrollArea()
                scroll.setWidget(strip)
                scroll.setFixedHeight(215)
                column.addWidget(scroll)
            lay.addLayout(column)
        self.resize(1400, 800)

    def show_pattern_match(self, picture, reason: str) -> None:
        """Above the photos: the two crops with the matched coat-pattern points joined, and why they match."""
        h, w = picture.shape[:2]
        image = QImage(picture.tobytes(), w, h, w * 3, QImage.Format.Format_RGB888).copy()
        self.pattern_view = QLabel()
        self.pattern_view.setPixmap(QPixmap.fromImage(image))
        self.pattern_reason = QLabel(reason)
        self.column.insertWidget(0, self.pattern_reason)
        self.column.insertWidget(0, self.pattern_view, 0, Qt.AlignmentFlag.AlignHCenter)


class BoxDialog(QDialog):
    """The whole photo, fitted to the screen (no scrolling, no second photo beside it), to draw a box on: the
    split compare view left the animal off-screen and a drag could not reach it."""

    def __init__(self, query: dict, full_width: int, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Draw a box around the animal: drag over it; Esc cancels")
        fit_title(self)
        screen = self.screen().availableGeometry() if self.screen() else QRect(0, 0, 1280, 800)
        fit = max(320, min(int(screen.width() * 0.9), int(screen.height() * 0.85) * 4 // 3, 1600))
        self.query_view = PhotoView()
        self.query_view.show_photo(query["path"], fit, full_width)
        self.query_view.box_mode = True
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"{query.get('file_name') or query['path']}: the box replaces the detector's"))
        lay.addWidget(self.query_view, 0, Qt.AlignmentFlag.AlignCenter)


class ReviewWidget(QWidget):
    decided = Signal(str)  # a one-line description of what was just recorded
    failed = Signal(str)  # a decision that could not be saved (catalogue locked, read-only, ...)
    box_added = Signal(int)  # a detection drawn by hand, waiting to be embedded
    # a detection whose side or species was just corrected: its suggestions are made again (engine.pipeline.
    # pending_suggestion); the window runs that in a worker
    suggestions_stale = Signal(int)

    def __init__(self, catalogue: Catalogue, who: str | None = None, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.who = who or getpass.getuser()
        self.model = ReviewQueueModel(catalogue, self)
        self.position = 0
        # Replaceable prompts (tests answer them without a modal dialog).
        self.ask_code: Callable[[QWidget, str], str | None] = ask_new_individual
        self.ask_species: Callable[[QWidget, str], str | None] = ask_species
        self.ask_confirm_existing: Callable[[QWidget, decisions.ExistingIndividual], bool] = ask_confirm_existing
        self.query = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.query.setMinimumSize(QSize(480, 360))
        self.caption = QLabel()
        self.status = QLabel()
        self.new_hint = QLabel()
        self.cards = [CandidateCard(i + 1) for i in range(5)]
        left = QVBoxLayout()
        left.addWidget(self.query, 1)
        left.addWidget(self.caption)
        left.addWidget(self.new_hint)
        grid = QGridLayout()
        for i, card in enumerate(self.cards):
            grid.addWidget(card, i // 3, i % 3)
        top = QHBoxLayout()
        top.addLayout(left, 3)
        top.addLayout(grid, 4)
        lay = QVBoxLayout(self)
        lay.addLayout(top, 1)
        keys = QLabel(
            "1–5 confirm · N new individual · R reject all · S skip · U undo · P species · F flank · ←/→ move · "
            "Z compare full size · B draw a box"
        )
        keys.setObjectName("keys")
        lay.addWidget(keys)
        lay.addWidget(self.status)
        self._bind_keys()
        self.reload()

    # -- data -----------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the queue's length and the reviewer's page (after an import, an undo, a drawn box)."""
        self.model.reload(self.position)
        self.position = min(self.position, max(0, self.model.total - 1))
        self.show_current()

    def current(self) -> dict | None:
        return self.model.item_at(self.position)

    def _candidate_info(self, cand: dict) -> dict | None:
        """The candidate's best-matching gallery photo, and when and where it was last seen."""
        rows = self.catalogue.query(
            """SELECT m.path, m.taken_at, dep.name AS site, d.x, d.y, d.w, d.h, d.viewpoint FROM sightings s
               JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id
               LEFT JOIN deployments dep ON dep.id = m.deployment_id
               WHERE s.individual_id = ? ORDER BY m.taken_at DESC, s.detection_id DESC""",
            [cand["individual_id"]],
        )
        if not rows:
            return None
        best_det = None
        note = self.catalogue.db.execute(
            "SELECT note FROM assignments WHERE status = 'suggested' AND individual_id = ? AND detection_id = ? "
            "ORDER BY id DESC LIMIT 1",
            [cand["individual_id"], self.current()["detection_id"]],
        ).fetchone()
        if note and note[0] and note[0].startswith("{"):
            best_det = json.loads(note[0]).get("gallery_detection")
        best = rows[0]
        if best_det:
            hit = self.catalogue.query(
                "SELECT m.path, d.x, d.y, d.w, d.h FROM detections d JOIN media m ON m.id = d.media_id WHERE d.id = ?",
                [best_det],
            )
            if hit:
                best = {**rows[0], **hit[0]}
        by_side: dict = {}
        for r in rows:  # newest first within each side
            if r["path"] != best["path"]:
                by_side.setdefault(r["viewpoint"], []).append(r)
        # Taken side by side in turn, so both flanks show however many photos one of them has.
        others = [r for turn in itertools.zip_longest(*by_side.values()) for r in turn if r is not None]
        return {
            "path": best["path"],
            "box": (best["x"], best["y"], best["w"], best["h"]) if best["w"] else None,
            "taken_at": rows[0]["taken_at"],
            "site": rows[0]["site"],
            "code": cand.get("code"),
            # Its other confirmed photos, both sides, so a person can check the match against more than one view.
            "others": [
                {
                    "path": r["path"],
                    "box": (r["x"], r["y"], r["w"], r["h"]) if r["w"] else None,
                    "caption": " · ".join(str(v) for v in (r["viewpoint"], (r["taken_at"] or "")[:10]) if v),
                }
                for r in others[:OTHER_PHOTOS]
            ],
        }

    def show_current(self) -> None:
        item = self.current()
        total = self.model.total
        if item is None:
            self.query.setText("No suggestions waiting. Import photos to fill the queue.")
            self.caption.setText("")
            self.new_hint.setText("")
            for card in self.cards:
                card.show_candidate(None, None)
            self.status.setText("queue empty")
            return
        self.query.setPixmap(pixmap(item["path"], item["box"], 480))
        self.caption.setText(
            f"{item.get('station') or '—'} / {item['file']} · {item['taken_at'] or 'time unknown'} · detection "
            f"{item['detection_id']} ({_found_by(item)}) · {self._side_text(item)} · {self.position + 1} of {total}"
        )
        self.new_hint.setText("<b>Probably a new individual</b> — press N to name it" if item["probably_new"] else "")
        for i, card in enumerate(self.cards):
            cand = item["candidates"][i] if i < len(item["candidates"]) else None
            card.show_candidate(cand, self._candidate_info(cand) if cand else None)

    def _side_text(self, item: dict) -> str:
        side, who = decisions.side_of(self.catalogue, item["detection_id"])
        if side is None:
            return "side not known (F)"
        return f"{side} flank" + (" (inferred from the photo)" if who and who.startswith("model:") else "")

    # -- keys -----------------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.bindings = {
            **{getattr(Qt.Key, f"Key_{i}"): (lambda i=i: self.confirm(i)) for i in range(1, 6)},
            Qt.Key.Key_N: self.new_individual,
            Qt.Key.Key_R: self.reject_all,
            Qt.Key.Key_S: self.skip,
            Qt.Key.Key_U: self.undo,
            Qt.Key.Key_P: self.set_species,
            Qt.Key.Key_F: self.next_side,
            Qt.Key.Key_Right: lambda: self.move(1),
            Qt.Key.Key_Left: lambda: self.move(-1),
            Qt.Key.Key_Z: self.compare,
            Qt.Key.Key_B: self.draw_box,
        }

    def keyPressEvent(self, event):  # noqa: N802 (Qt API)
        action = self.bindings.get(Qt.Key(event.key())) if not event.modifiers() else None
        if action is None:
            super().keyPressEvent(event)
            return
        self._guarded(action)

    def _guarded(self, fn) -> None:
        """A decision the catalogue refuses (locked by another program, read-only disk) is reported, and nothing
        half-written is left: each decision is one row."""
        try:
            fn()
        except decisions.DecisionError as exc:
            self.status.setText(f"not saved: {exc}")
            self.failed.emit(str(exc))
        except sqlite3.Error as exc:
            text = f"not saved: {self.catalogue.path} refused the write ({exc})"
            self.status.setText(text)
            self.failed.emit(text)

    def _after_decision(self, text: str, detection_id: int | None = None) -> None:
        """Say what was recorded; a decision on one detection takes its one row out of the queue (the next one
        moves up), anything else re-reads the reviewer's page."""
        self.status.setText(text)
        self.decided.emit(text)
        if detection_id is None:
            self.reload()
            return
        self.model.remove(detection_id)
        self.position = min(self.position, max(0, self.model.total - 1))
        self.show_current()

    def confirm(self, rank: int) -> None:
        item = self.current()
        if not item or rank > len(item["candidates"]):
            return
        cand = item["candidates"][rank - 1]
        decisions.confirm(self.catalogue, item["detection_id"], cand["individual_id"], self.who, score=cand["score"])
        self._after_decision(f"detection {item['detection_id']} confirmed as {cand['code']}", item["detection_id"])

    def reject_all(self) -> None:
        item = self.current()
        if item:
            self.catalogue.reject(item["detection_id"], None, who=self.who)
            self._after_decision(f"detection {item['detection_id']}: all suggestions rejected", item["detection_id"])

    def new_individual(self) -> None:
        """Name a new individual; a code that exists already offers to confirm that individual instead."""
        item = self.current()
        if not item:
            return
        det = item["detection_id"]
        species = decisions.detection_species(self.catalogue, det)
        if species is None:
            species = self.ask_species(self, "")
            if not species:
                return
            decisions.set_detection_species(self.catalogue, det, species, self.who)
        count = self.catalogue.db.execute("SELECT count(*) FROM individuals WHERE species = ?", [species]).fetchone()
        code = self.ask_code(self, f"{species[:3].upper()}-{count[0] + 1:03d}")
        if not code:
            return
        try:
            decisions.name_new_individual(self.catalogue, det, code, self.who, species=species)
        except decisions.ExistingIndividual as existing:
            if not self.ask_confirm_existing(self, existing):
                self.status.setText(f"not saved: {existing}")
                return
            decisions.confirm(self.catalogue, det, existing.individual_id, self.who)
            self._after_decision(f"detection {det} confirmed as the existing {existing.code} ({existing.species})", det)
            return
        self._after_decision(f"detection {det}: new individual {code} ({species})", det)

    def set_species(self) -> None:
        item = self.current()
        if not item:
            return
        species = self.ask_species(self, decisions.detection_species(self.catalogue, item["detection_id"]) or "")
        if species:
            decisions.set_detection_species(self.catalogue, item["detection_id"], species, self.who)
            self._after_decision(f"detection {item['detection_id']}: species set to {species}")
            self.suggestions_stale.emit(item["detection_id"])

    def next_side(self) -> None:
        """The flank the detection shows, in turn left, right, not known: once confirmed it is compared only with
        its individual's photos of that side (and those of no known side)."""
        item = self.current()
        if not item:
            return
        side, _ = decisions.side_of(self.catalogue, item["detection_id"])
        following = {None: "left", "left": "right", "right": None}[side]
        decisions.set_detection_side(self.catalogue, item["detection_id"], following, self.who)
        self.status.setText(
            f"detection {item['detection_id']}: {following + ' flank' if following else 'side not known'}; "
            "its suggestions are made again in the background"
        )
        self.show_current()
        self.suggestions_stale.emit(item["detection_id"])

    def skip(self) -> None:
        self.move(1)

    def undo(self) -> None:
        undone = decisions.undo_last(self.catalogue, self.who)
        self._after_decision(f"undone: {decisions.describe(undone)}" if undone else "nothing of yours to undo")

    def move(self, step: int) -> None:
        if self.model.total:
            self.position = (self.position + step) % self.model.total
            self.show_current()

    def compare(self) -> CompareDialog | None:
        item = self.current()
        if not item:
            return None
        cand = item["candidates"][0] if item["candidates"] else None
        dialog = CompareDialog(item, self._candidate_info(cand) if cand else None, self._full_width(item), self)
        if cand and cand.get("gallery_detection"):
            try:
                picture, _ = explain_match(self.catalogue, item["detection_id"], cand["gallery_detection"])
                dialog.show_pattern_match(picture, f"{cand['code']}: {cand.get('reason') or ''}")
            except (ImageError, IndexError) as exc:  # a photo moved away since import: the photos still show
                self.failed.emit(f"cannot draw the pattern match: {exc}")
        dialog.show()
        return dialog

    def _full_width(self, item: dict) -> int:
        from PIL import Image, ImageOps

        from desktop.images import _load  # noqa: F401  (same decode path)

        with Image.open(item["path"]) as im:
            return ImageOps.exif_transpose(im).size[0]

    def draw_box(self) -> BoxDialog | None:
        """The whole photo fitted to the screen in box mode: the drawn box becomes a manual detection."""
        item = self.current()
        if not item:
            return None
        dialog = BoxDialog(item, self._full_width(item), self)
        dialog.query_view.box_drawn.connect(lambda box: self.add_manual_box(item, box, dialog))
        dialog.show()
        return dialog

    def add_manual_box(self, item: dict, box: tuple, dialog: QDialog | None = None) -> int:
        media_id = self.catalogue.db.execute(
            "SELECT media_id FROM detections WHERE id = ?", [item["detection_id"]]
        ).fetchone()[0]
        with self.catalogue.transaction():
            det = self.catalogue.add_detection(media_id, box, source="manual", label="animal", score=1.0)
            # The hand-drawn box corrects the detector's: the old one leaves the queue (undo brings it back).
            self.catalogue.record(
                item["detection_id"], None, "rejected", self.who, note=f"box corrected by hand: detection {det}"
            )
        self.status.setText(f"box drawn by hand as detection {det}; it is embedded and suggested in the background")
        self.box_added.emit(det)
        self.reload()
        if dialog is not None:
            dialog.accept()
        return det


def _found_by(item: dict) -> str:
    """What boxed this animal: 'animal 0.87 by herdbook-detector', or the whole frame / a hand-drawn box."""
    if item.get("detector") in (None, "whole-frame"):
        return "whole frame"
    score = item.get("detector_score")
    score_text = f" {score:.2f}" if score is not None and item.get("detector") != "manual" else ""
    return f"{item.get('detector_label') or 'animal'}{score_text} by {item['detector']}"
