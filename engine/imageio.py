"""Loading photos for the networks: upright (EXIF orientation applied), RGB, cropped to a box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16  # smaller crops carry no identity; refuse them with a message rather than embed noise


class ImageError(Exception):
    """A photo or crop that cannot be used; the message names the file and the problem."""


def load_rgb(path: str | Path) -> np.ndarray:
    """The photo as an upright H x W x 3 uint8 RGB array."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: damaged image ({exc})") from None


def crop(image: np.ndarray, box, source: str = "image") -> np.ndarray:
    """Crop an (x, y, w, h) pixel box, clipped to the image; refuses crops under MIN_SIDE pixels."""
    h, w = image.shape[:2]
    if box is None:
        out = image
    else:
        x, y, bw, bh = (float(v) for v in box)
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
        out = image[y0:y1, x0:x1]
    if out.shape[0] < MIN_SIDE or out.shape[1] < MIN_SIDE:
        raise ImageError(
            f"{source}: crop of {out.shape[1]}x{out.shape[0]} px is too small to identify an animal "
            f"(at least {MIN_SIDE}x{MIN_SIDE})"
        )
    return out
