"""Deployments editor: where each camera stood, its time zone and its clock error, edited in the app.

Camtrap DP needs coordinates and a UTC offset for every deployment it exports; a camera whose clock was wrong
needs its photos' times moved. A table over the catalogue's deployments (Qt model/view): each edit is checked and
written at once through the catalogue (engine.catalogue), or refused with a message naming the value and why.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, Qt, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTableView, QVBoxLayout

from engine.catalogue import Catalogue
from engine.exif import valid_zone

from .layout import fit_title, headers_in_full

# (column key, header, tooltip)
COLUMNS = (
    ("name", "Deployment", "the camera's folder on the card; fixed"),
    ("site", "Site", "a name for the place, shared by the cameras that stood there"),
    ("camera", "Camera", "make, model or serial number"),
    ("latitude", "Latitude", "decimal degrees, south negative (-90 to 90)"),
    ("longitude", "Longitude", "decimal degrees, west negative (-180 to 180)"),
    ("utc_offset", "UTC offset or time zone", "+02:00, or a zone name such as Africa/Johannesburg (follows DST)"),
    ("clock_offset_s", "Clock correction (s)", "seconds added to every photo time of this camera"),
    ("photos", "Photos", "photos imported from this deployment"),
)
EDITABLE = {"site", "camera", "latitude", "longitude", "utc_offset", "clock_offset_s"}


class DeploymentsModel(QAbstractTableModel):
    """The catalogue's deployments, one row each; ``refused`` says why an edit was not written."""

    refused = Signal(str)
    changed = Signal(str)

    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.catalogue = catalogue
        self.rows: list[dict] = []
        self.reload()

    def reload(self) -> None:
        self.beginResetModel()
        self.rows = self.catalogue.query(
            """SELECT d.*, (SELECT count(*) FROM media m WHERE m.deployment_id = d.id) AS photos
               FROM deployments d ORDER BY d.name"""
        )
        self.endResetModel()

    def rowCount(self, parent=None) -> int:  # noqa: N802 (Qt API)
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent=None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def flags(self, index):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return base | Qt.ItemFlag.ItemIsEditable if COLUMNS[index.column()][0] in EDITABLE else base

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        key = COLUMNS[index.column()][0]
        value = self.rows[index.row()].get(key)
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if value is None:
                return "" if role == Qt.ItemDataRole.EditRole else "—"
            return f"{value:g}" if isinstance(value, float) else str(value)
        if role == Qt.ItemDataRole.ToolTipRole and value is None and key in ("latitude", "longitude"):
            return "missing: Camtrap DP takes it from the photos' GPS, else from here"
        return None

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        row, key = self.rows[index.row()], COLUMNS[index.column()][0]
        text = str(value).strip()
        try:
            parsed = _parse(key, text)
        except ValueError as exc:
            self.refused.emit(f"{row['name']}: {COLUMNS[index.column()][1].lower()} {text!r} not saved: {exc}")
            return False
        if key == "clock_offset_s":
            moved = self.catalogue.set_clock_offset(row["name"], parsed or 0.0)
            said = f"{row['name']}: clock correction {parsed or 0:+g} s, {moved} photo times moved"
        else:
            self.catalogue.update_deployment(row["name"], **{key: parsed})
            said = f"{row['name']}: {COLUMNS[index.column()][1].lower()} saved"
        row.update(self.catalogue.deployment(row["name"]))
        self.dataChanged.emit(self.index(index.row(), 0), self.index(index.row(), len(COLUMNS) - 1))
        self.changed.emit(said)
        return True


def _parse(key: str, text: str):
    """The value to store for a cell's text (None clears it), or ValueError saying what is wrong."""
    if not text:
        return None
    if key in ("latitude", "longitude", "clock_offset_s"):
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            raise ValueError("not a number") from None
        limit = {"latitude": 90, "longitude": 180}.get(key)
        if limit is not None and not -limit <= number <= limit:
            raise ValueError(f"outside -{limit}..{limit} degrees")
        return number
    if key == "utc_offset" and not valid_zone(text):
        raise ValueError("neither a UTC offset (+02:00) nor a time zone name (Europe/Berlin)")
    return text


class DeploymentsDialog(QDialog):
    def __init__(self, catalogue: Catalogue, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Deployments — where and when each camera recorded")
        fit_title(self)
        self.model = DeploymentsModel(catalogue, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        headers_in_full(self.table)
        self.message = QLabel("Double-click a cell to edit it; each change is saved at once.")
        self.message.setWordWrap(True)
        self.model.refused.connect(self.message.setText)
        self.model.changed.connect(self.message.setText)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(self.message)
        lay.addWidget(buttons)
        self.resize(1000, 420)
