"""Loading photos for the networks: upright (EXIF orientation applied), RGB, cropped to a box."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16  # smaller crops carry no identity; refuse them with a message rather than embed noise


class ImageError(Exception):
    """A photo or crop that cannot be used; the message names the file and the problem."""


@contextmanager
def open_image(path: str | Path):
    """Image.open with the failures a card holds (missing, not an image, truncated) as one ImageError."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: damaged image ({exc})") from None


def load_rgb(path: str | Path) -> np.ndarray:
    """The photo as an upright H x W x 3 uint8 RGB array."""
    with open_image(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def load_rgb_reduced(path: str | Path, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The upright photo decoded at reduced size for a detector, and the upright full size (width, height).

    JPEG draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, the smallest that keeps both sides at least
    `min_side`: an 8 MP frame for a 512 px detector is never decoded at full size. Boxes found on the reduced
    image scale back with full / reduced.
    """
    with open_image(path) as image:
        full = image.size
        image.draft("RGB", (min_side, min_side))
        array = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        transposed = array.shape[1] != image.size[0]
        return array, ((full[1], full[0]) if transposed else full)


def crop(image: np.ndarray, box, source: str = "image", margin: float = 0.0) -> np.ndarray:
    """Crop an (x, y, w, h) pixel box grown by `margin` of its size on each side, clipped to the image;
    refuses crops under MIN_SIDE pixels."""
    h, w = image.shape[:2]
    if box is None:
        out = image
    else:
        x, y, bw, bh = (float(v) for v in box)
        x, y, bw, bh = x - margin * bw, y - margin * bh, bw * (1 + 2 * margin), bh * (1 + 2 * margin)
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
        out = image[y0:y1, x0:x1]
    if out.shape[0] < MIN_SIDE or out.shape[1] < MIN_SIDE:
        raise ImageError(
            f"{source}: crop of {out.shape[1]}x{out.shape[0]} px is too small to identify an animal "
            f"(at least {MIN_SIDE}x{MIN_SIDE})"
        )
    return out
