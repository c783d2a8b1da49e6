"""Render every screen of the app on a catalogue to PNG files (for the README and for checks), offscreen."""

from __future__ import annotations

import os
from pathlib import Path


def render_all(catalogue: str | Path, out_dir: str | Path) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from .app import MainWindow

    app = QApplication.instance() or QApplication([])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    window = MainWindow(catalogue)
    window.show()
    shots = []

    def save(widget, name):
        app.processEvents()
        path = out_dir / f"{name}.png"
        widget.grab().save(str(path))
        shots.append(path)

    for index, name in enumerate(("overview", "review", "individuals")):
        window.tabs.setCurrentIndex(index)
        if name == "individuals" and window.individuals.model.rows:
            busiest = max(
                range(len(window.individuals.model.rows)), key=lambda i: window.individuals.model.rows[i]["sightings"]
            )
            window.individuals.table.selectRow(busiest)
        save(window, name)
    for name, opener in (("import", window.open_import), ("export", window.open_export), ("train", window.open_train)):
        dialog = opener()
        save(dialog, name)
        dialog.close()
    item = window.review.current()
    if item:
        dialog = window.review.compare()
        save(dialog, "compare")
        dialog.close()
    window.close()
    return shots
