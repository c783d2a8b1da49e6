"""Small layout rules shared by the windows: nothing a biologist needs to read is cut off."""

from __future__ import annotations

from PySide6.QtWidgets import QHeaderView, QTableView, QWidget

TITLE_MARGIN = 160  # the window manager's buttons and frame beside the title


def fit_title(window: QWidget) -> None:
    """A dialog at least as wide as its title (window managers elide a title wider than the window)."""
    window.setMinimumWidth(
        max(window.minimumWidth(), window.fontMetrics().horizontalAdvance(window.windowTitle()) + TITLE_MARGIN)
    )


def headers_in_full(table: QTableView) -> None:
    """Columns never narrower than their header's text; the last one takes the remaining width."""
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
