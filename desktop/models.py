"""Qt item models over the catalogue: the review queue, individuals, and one individual's sightings."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt

from engine.catalogue import Catalogue
from engine.pipeline import open_count, open_suggestions, review_model

NO_PARENT = QModelIndex()


class TableModel(QAbstractTableModel):
    """A read-only table of dict rows with named columns; ``reload`` re-queries."""

    columns: list[tuple[str, str]] = []  # (key, header)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[dict] = []

    def rowCount(self, parent=NO_PARENT):  # noqa: N802 (Qt API)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=NO_PARENT):  # noqa: N802
        return len(self.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        value = self.rows[index.row()].get(self.columns[index.column()][0])
        return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section][1]
        return None

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()


class ReviewQueueModel(TableModel):
    """One page of the review queue around the reviewer's place in it; the whole queue is never loaded (a field
    season holds hundreds of thousands of waiting detections). A decision removes its one row."""

    columns = [("detection_id", "Detection"), ("file", "Photo"), ("taken_at", "Taken"), ("top", "Best match")]
    PAGE = 200

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.offset = 0  # queue position of rows[0]
        self.total = 0  # detections waiting, all pages
        self.model_id: int | None = None

    def reload(self, position: int = 0) -> None:
        """Re-read the queue's length and the page that holds ``position``."""
        self.model_id = review_model(self.catalogue)
        self.total = open_count(self.catalogue, self.model_id) if self.model_id is not None else 0
        self.load_page(min(position, max(self.total - 1, 0)))

    def load_page(self, position: int) -> None:
        self.offset = position - position % self.PAGE
        items = open_suggestions(self.catalogue, self.model_id, self.PAGE, self.offset) if self.total else []
        for it in items:
            it["file"] = it["path"].rsplit("/", 1)[-1]
            best = it["candidates"][0] if it["candidates"] else None
            it["top"] = f"{best['code']} ({best['score']:.2f})" if best else "—"
            if it["probably_new"]:
                it["top"] += "  · probably new"
        self.set_rows(items)

    def item_at(self, position: int) -> dict | None:
        """The queue's item at ``position`` (0-based over all pages), reading its page when needed."""
        if not 0 <= position < self.total:
            return None
        if not self.offset <= position < self.offset + len(self.rows):
            self.load_page(position)
        index = position - self.offset
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def remove(self, detection_id: int) -> None:
        """A decision took this detection out of the queue: drop its row, nothing else is re-read."""
        for i, row in enumerate(self.rows):
            if row["detection_id"] == detection_id:
                self.beginRemoveRows(NO_PARENT, i, i)
                del self.rows[i]
                self.endRemoveRows()
                self.total -= 1
                return


class IndividualsModel(TableModel):
    """Individuals matching the filter, at most LIMIT rows (type to narrow a large catalogue down)."""

    columns = [
        ("code", "Code"),
        ("name", "Name"),
        ("species", "Species"),
        ("sightings", "Sightings"),
        ("last_seen", "Last seen"),
    ]
    LIMIT = 1000

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.filter = ""

    def reload(self) -> None:
        like = f"%{self.filter.lower()}%"  # lower() on both sides: PostgreSQL's LIKE heeds case, SQLite's not
        # Counted per listed individual through the indexed sighting table (with records merged into it), so
        # a keystroke costs the rows shown, not a GROUP BY over the whole catalogue. Its own sightings and those
        # of records merged into it are two index lookups each: one "id = ? OR merged_into = ?" made PostgreSQL
        # scan every individual per listed row (6.8 s for the list at 100k detections).
        latest = (
            "SELECT max(m.taken_at) FROM sighting_state s JOIN detections d ON d.id = s.detection_id "
            "JOIN media m ON m.id = d.media_id"
        )
        self.set_rows(
            self.catalogue.query(
                f"""SELECT id, code, name, species, own_n + merged_n AS sightings,
                          COALESCE(CASE WHEN merged_last > own_last THEN merged_last END, own_last, merged_last)
                            AS last_seen
                   FROM (SELECT i.id, i.code, i.name, i.species,
                           (SELECT count(*) FROM sighting_state s WHERE s.individual_id = i.id) AS own_n,
                           (SELECT count(*) FROM individuals src JOIN sighting_state s ON s.individual_id = src.id
                            WHERE src.merged_into = i.id) AS merged_n,
                           ({latest} WHERE s.individual_id = i.id) AS own_last,
                           ({latest} JOIN individuals src ON src.id = s.individual_id
                            WHERE src.merged_into = i.id) AS merged_last
                         FROM individuals i
                         WHERE i.merged_into IS NULL
                           AND (lower(i.code) LIKE ? OR lower(COALESCE(i.name, '')) LIKE ?
                                OR lower(i.species) LIKE ?)
                         ORDER BY i.species, i.code LIMIT ?) listed
                   ORDER BY species, code""",
                [like, like, like, self.LIMIT],
            )
        )


class SightingsModel(TableModel):
    columns = [
        ("taken_at", "Taken"),
        ("site", "Site"),
        ("file_name", "Photo"),
        ("viewpoint", "Side"),
        ("latitude", "Lat"),
        ("longitude", "Lon"),
        ("who", "Confirmed by"),
    ]

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue

    def load(self, individual_id: int) -> None:
        self.set_rows(
            self.catalogue.query(
                """SELECT m.taken_at, dep.name AS site, m.file_name, m.path, d.viewpoint, d.x, d.y, d.w, d.h,
                      COALESCE(m.latitude, dep.latitude) AS latitude,
                      COALESCE(m.longitude, dep.longitude) AS longitude, s.who, s.detection_id
               FROM sightings s JOIN individuals i ON i.id = s.individual_id
               JOIN detections d ON d.id = s.detection_id JOIN media m ON m.id = d.media_id
               LEFT JOIN deployments dep ON dep.id = m.deployment_id
               WHERE (i.id = ? AND i.merged_into IS NULL) OR i.merged_into = ?
               ORDER BY m.taken_at, s.detection_id""",
                [individual_id, individual_id],
            )
        )
