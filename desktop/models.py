"""Qt item models over the catalogue: the review queue, individuals, and one individual's sightings."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt

from engine.catalogue import Catalogue
from engine.pipeline import open_suggestions

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
    columns = [("detection_id", "Detection"), ("file", "Photo"), ("taken_at", "Taken"), ("top", "Best match")]

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue

    def reload(self) -> None:
        items = open_suggestions(self.catalogue)
        for it in items:
            it["file"] = it["path"].rsplit("/", 1)[-1]
            best = it["candidates"][0] if it["candidates"] else None
            it["top"] = f"{best['code']} ({best['score']:.2f})" if best else "—"
            if it["probably_new"]:
                it["top"] += "  · probably new"
        self.set_rows(items)


class IndividualsModel(TableModel):
    columns = [
        ("code", "Code"),
        ("name", "Name"),
        ("species", "Species"),
        ("sightings", "Sightings"),
        ("last_seen", "Last seen"),
    ]

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.filter = ""

    def reload(self) -> None:
        like = f"%{self.filter}%"
        self.set_rows(
            self.catalogue.query(
                """SELECT i.id, i.code, i.name, i.species, count(s.detection_id) AS sightings,
                      max(m.taken_at) AS last_seen
               FROM individuals i LEFT JOIN individuals src ON COALESCE(src.merged_into, src.id) = i.id
               LEFT JOIN sightings s ON s.individual_id = src.id
               LEFT JOIN detections d ON d.id = s.detection_id LEFT JOIN media m ON m.id = d.media_id
               WHERE i.merged_into IS NULL AND (i.code LIKE ? OR COALESCE(i.name, '') LIKE ? OR i.species LIKE ?)
               GROUP BY i.id ORDER BY i.species, i.code""",
                [like, like, like],
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
               WHERE COALESCE(i.merged_into, i.id) = ? ORDER BY m.taken_at, s.detection_id""",
                [individual_id],
            )
        )
