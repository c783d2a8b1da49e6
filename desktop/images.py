"""Photos and crops as QPixmaps, decoded at the size they are shown (JPEG draft mode) and cached."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageOps
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


@lru_cache(maxsize=256)
def _load(path: str, box: tuple | None, max_side: int) -> QImage:
    with Image.open(path) as im:
        orientation = im.getexif().get(0x0112)
        full_w = im.size[1] if orientation in (5, 6, 7, 8) else im.size[0]
        # Decode at a reduced scale where JPEG allows, but keep enough pixels for the box.
        want = max_side * 4 if box is None else max(max_side * 4, int(full_w * max_side / max(box[2], 1)))
        im.draft("RGB", (want, want))
        upright = ImageOps.exif_transpose(im).convert("RGB")
    if box is not None:
        s = upright.size[0] / full_w  # boxes are in full-resolution upright pixels
        x, y, w, h = (v * s for v in box)
        upright = upright.crop((int(x), int(y), int(x + w), int(y + h)))
    upright.thumbnail((max_side, max_side))
    data = upright.tobytes("raw", "RGB")
    return QImage(data, upright.size[0], upright.size[1], upright.size[0] * 3, QImage.Format.Format_RGB888).copy()


def pixmap(path: str, box=None, max_side: int = 320) -> QPixmap:
    """The photo (or the box of it) no larger than max_side; an empty pixmap for an unreadable file."""
    try:
        return QPixmap.fromImage(_load(path, tuple(box) if box and box[2] else None, max_side))
    except (OSError, ValueError, SyntaxError):
        return QPixmap()


def thumbnail_pixmap(jpeg: bytes, max_side: int = 320) -> QPixmap:
    """A crop that came with a sync (the photo itself stays at its station)."""
    image = QPixmap()
    image.loadFromData(bytes(jpeg), "JPEG")
    return image.scaled(max_side, max_side, aspectMode=Qt.AspectRatioMode.KeepAspectRatio) if max_side else image
