"""Read what a camera wrote into a photo: time, place, camera, orientation and XMP tags.

piexif parses the EXIF block; Pillow decodes the pixels (to prove the file is an image) and is the fallback
where piexif gives up. Camera-trap makers write odd EXIF, so every field is read on its own and a bad field
becomes a warning, never an exception. Where a camera keeps its clock only in its maker note (Reconyx
HyperFire), that documented structure is decoded and the row says so in ``time_source``.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import piexif
from PIL import Image, IptcImagePlugin, UnidentifiedImageError

# Some trail cameras write a fixed position when they have no GPS fix; both mean "unknown".
PLACEHOLDER_GPS = ((0.0, 0.0), (1.0225, 1.0225))

_EXIF_DT = re.compile(r"^\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_XMP_DT = re.compile(
    r"^\s*(\d{4})[-:](\d{2})[-:](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{1,2}:?\d{2})?"
)
_OFFSET = re.compile(r"^\s*([+-])(\d{1,2}):?(\d{2})\s*$")


@dataclass
class PhotoMeta:
    """Everything Herdbook keeps of one photo's embedded metadata."""

    width: int | None = None
    height: int | None = None
    taken_at_raw: str | None = None  # ISO 8601 as the camera wrote it (offset when the camera gave one)
    time_source: str | None = None  # exif | makernote:reconyx | xmp | iptc | None
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    camera_serial: str | None = None
    orientation: int | None = None
    subjects: list[str] = field(default_factory=list)  # XMP HierarchicalSubject entries
    warnings: list[str] = field(default_factory=list)  # odd but harmless (placeholder GPS, ...)
    exif_error: str | None = None  # the EXIF block (or part of it) is broken; pixels may still be fine
    error: str | None = None  # set when the file is not a readable image


def _text(value) -> str | None:
    """Decode an EXIF ASCII value the way exiftool shows it: trailing NULs and spaces removed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    value = str(value).split("\x00", 1)[0].strip()
    return value or None


def _rational(value) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return num / den if den else 0.0
    return float(value)


def exif_datetime_to_iso(raw: str, subsec: str | None = None, offset: str | None = None) -> str | None:
    """'2019:06:28 19:03:58' (+ sub-seconds, + '+02:00') -> '2019-06-28T19:03:58.12+02:00'."""
    m = _EXIF_DT.match(raw or "")
    if not m:
        return None
    parts = [int(p) for p in m.groups()]
    datetime(*parts)  # raises ValueError on month 13, day 0, ...
    iso = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*parts)
    subsec = (subsec or "").strip()
    if subsec.isdigit():
        iso += "." + subsec
    return iso + (normalise_offset(offset) or "")


@functools.lru_cache(maxsize=1024)  # an export asks for the same few offsets once per photo
def normalise_offset(offset: str | None) -> str | None:
    """'+2:00', '+0200', 'Z' -> '+02:00' / '+00:00'; None for anything else."""
    if not offset:
        return None
    offset = offset.strip()
    if offset == "Z":
        return "+00:00"
    m = _OFFSET.match(offset)
    if not m:
        return None
    sign, hours, minutes = m.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    return f"{sign}{int(hours):02d}:{minutes}"


def offset_at(zone: str | None, local_time: str) -> str | None:
    """The UTC offset ('+02:00') that ``zone`` had at a local wall-clock time: a fixed offset as given, or an IANA
    time zone name ('Africa/Johannesburg', 'Europe/Berlin') with its daylight-saving rules (zoneinfo). A time
    that occurs twice when clocks go back takes its first (summer) offset. None when ``zone`` is neither."""
    fixed = normalise_offset(zone)
    if fixed or not zone:
        return fixed
    try:
        tz = ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None
    delta = datetime.fromisoformat(local_time).replace(tzinfo=tz).utcoffset()
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def valid_zone(zone: str) -> bool:
    """A fixed UTC offset or an IANA time zone name."""
    return offset_at(zone, "2000-01-01T12:00:00") is not None


def xmp_datetime_to_iso(raw: str) -> str | None:
    m = _XMP_DT.match(raw or "")
    if not m:
        return None
    y, mo, d, h, mi, s, frac, off = m.groups()
    base = exif_datetime_to_iso(f"{y}:{mo}:{d} {h}:{mi}:{s}", frac)
    return base + (normalise_offset(off) or "") if base else None


def upright_size(width: int, height: int, orientation: int | None) -> tuple[int, int]:
    """Width and height of the photo as shown: EXIF orientations 5-8 turn it by 90 degrees."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def reconyx_hyperfire_makernote(maker_note: bytes) -> dict:
    """Decode the Reconyx HyperFire maker note (version 0xF101), as documented by exiftool's Reconyx.pm.

    Layout in little-endian int16 words: [0] version, [11:17] sec, min, hour, month, day, year,
    [21:36] serial number as UTF-16LE.
    """
    if len(maker_note) < 72 or struct.unpack_from("<H", maker_note, 0)[0] != 0xF101:
        return {}
    sec, minute, hour, month, day, year = struct.unpack_from("<6H", maker_note, 22)
    out = {}
    try:
        out["taken_at"] = datetime(year, month, day, hour, minute, sec).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        pass
    serial = maker_note[42:72].decode("utf-16-le", errors="ignore").split("\x00", 1)[0].strip()
    if serial:
        out["serial"] = serial
    return out


def _gps(gps: dict, meta: PhotoMeta) -> None:
    try:
        lat, lon = gps.get(piexif.GPSIFD.GPSLatitude), gps.get(piexif.GPSIFD.GPSLongitude)
        if not lat or not lon or len(lat) != 3 or len(lon) != 3:
            return
        latitude = sum(_rational(v) / 60**i for i, v in enumerate(lat))
        longitude = sum(_rational(v) / 60**i for i, v in enumerate(lon))
        if _text(gps.get(piexif.GPSIFD.GPSLatitudeRef)) == "S":
            latitude = -latitude
        if _text(gps.get(piexif.GPSIFD.GPSLongitudeRef)) == "W":
            longitude = -longitude
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            meta.warnings.append(f"GPS position out of range ({latitude}, {longitude}) ignored")
            return
        if any(abs(latitude - a) < 1e-4 and abs(longitude - b) < 1e-4 for a, b in PLACEHOLDER_GPS):
            meta.warnings.append(f"placeholder GPS {latitude:.4f}, {longitude:.4f} means no fix; ignored")
            return
        meta.latitude, meta.longitude = latitude, longitude
        if piexif.GPSIFD.GPSAltitude in gps:
            alt = _rational(gps[piexif.GPSIFD.GPSAltitude])
            meta.altitude = -alt if gps.get(piexif.GPSIFD.GPSAltitudeRef) in (1, b"\x01") else alt
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        meta.warnings.append(f"unreadable GPS block: {exc}")


def _text_fields(image: Image.Image, meta: PhotoMeta) -> None:
    """Make, model, serial, orientation and DateTimeOriginal through Pillow.

    Pillow is the better reader here: piexif drops the last character of ASCII values whose count omits the
    terminating NUL (as Kodak writes them), which would turn '09:47:23' into '09:47:2'.
    """
    exif = image.getexif()
    sub = exif.get_ifd(0x8769)
    meta.camera_make = _text(exif.get(0x010F))
    meta.camera_model = _text(exif.get(0x0110))
    meta.camera_serial = _text(sub.get(0xA431))
    orientation = exif.get(0x0112)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        meta.orientation = orientation
    raw_dt = _text(sub.get(0x9003))
    if raw_dt:
        try:
            meta.taken_at_raw = exif_datetime_to_iso(raw_dt, _text(sub.get(0x9291)), _text(sub.get(0x9011)))
        except ValueError:
            meta.warnings.append(f"impossible DateTimeOriginal {raw_dt!r} ignored")
            return
        if meta.taken_at_raw:
            meta.time_source = "exif"
        else:
            meta.warnings.append(f"unparseable DateTimeOriginal {raw_dt!r} ignored")


def _binary_fields(exif: dict, meta: PhotoMeta) -> None:
    """GPS rationals and the maker note through piexif."""
    maker_note = (exif.get("Exif") or {}).get(piexif.ExifIFD.MakerNote)
    if isinstance(maker_note, bytes):
        reconyx = reconyx_hyperfire_makernote(maker_note)
        if reconyx.get("taken_at") and not meta.taken_at_raw:
            meta.taken_at_raw, meta.time_source = reconyx["taken_at"], "makernote:reconyx"
        if reconyx.get("serial") and not meta.camera_serial:
            meta.camera_serial = reconyx["serial"]
    _gps(exif.get("GPS") or {}, meta)


def _get(node, key: str):
    """An XMP element by name, case-insensitively: Pillow gives lightroom's HierarchicalSubject as
    'hierarchicalSubject'."""
    if not isinstance(node, dict):
        return None
    key = key.casefold()
    return next((v for k, v in node.items() if k.casefold() == key), None)


def _child(node, key: str) -> dict:
    """A nested XMP element as a dict; XMP written by odd tools has strings or lists where dicts belong."""
    value = _get(node, key)
    return value if isinstance(value, dict) else {}


def _xmp(image: Image.Image, meta: PhotoMeta) -> None:
    try:
        xmp = image.getxmp()
    except Exception as exc:  # a malformed XMP packet must not stop the import
        meta.warnings.append(f"unreadable XMP packet: {exc}")
        return
    description = _get(_child(_child(xmp, "xmpmeta"), "RDF"), "Description")
    descriptions = description if isinstance(description, list) else [description]
    for desc in descriptions:
        if not isinstance(desc, dict):
            continue
        subjects = _child(_child(desc, "HierarchicalSubject"), "Bag").get("li")
        if subjects:
            meta.subjects.extend([subjects] if isinstance(subjects, str) else [str(s) for s in subjects])
        xmp_time = _get(desc, "DateTimeOriginal")
        if not meta.taken_at_raw and isinstance(xmp_time, str):
            iso = xmp_datetime_to_iso(xmp_time)
            if iso:
                meta.taken_at_raw, meta.time_source = iso, "xmp"


def iptc_datetime_to_iso(date: bytes, time: bytes | None) -> str | None:
    """IPTC IIM DateCreated (CCYYMMDD) and TimeCreated (HHMMSS, often with +HHMM) as ISO 8601."""
    try:
        day = datetime.strptime(date.decode("ascii").strip(), "%Y%m%d")
    except (UnicodeDecodeError, ValueError):
        return None
    clock = (time or b"").decode("ascii", "replace").strip()
    if len(clock) >= 6 and clock[:6].isdigit():
        iso = f"{day:%Y-%m-%d}T{clock[0:2]}:{clock[2:4]}:{clock[4:6]}"
        zone = clock[6:]
        if len(zone) == 5 and zone[0] in "+-" and zone[1:].isdigit():
            iso += f"{zone[:3]}:{zone[3:]}"
        return iso
    return f"{day:%Y-%m-%d}T00:00:00" if not clock else None


def _iptc(image: Image.Image, meta: PhotoMeta) -> None:
    """Older cameras and archive software keep the capture time only in the legacy IPTC IIM block (APP13):
    DateCreated + TimeCreated, read through Pillow's IPTC reader, as exiftool reads them. Used only when EXIF,
    the maker note and XMP give no time."""
    if meta.taken_at_raw:
        return
    try:
        info = IptcImagePlugin.getiptcinfo(image) or {}
    except Exception:  # a damaged APP13 block is not worth a warning when it holds no time we need
        return
    date = info.get((2, 55))
    if isinstance(date, list):
        date = date[0]
    time = info.get((2, 60))
    if isinstance(time, list):
        time = time[0]
    iso = iptc_datetime_to_iso(date, time) if isinstance(date, bytes) else None
    if iso:
        meta.taken_at_raw, meta.time_source = iso, "iptc"


def read_photo(path: str | Path) -> PhotoMeta:
    """Read one image file. Never raises for a bad file: the problem goes into ``error``/``warnings``."""
    meta = PhotoMeta()
    try:
        with Image.open(path) as image:
            meta.width, meta.height = image.size
            try:
                _text_fields(image, meta)
            except Exception as exc:  # a broken IFD must not stop the import
                meta.exif_error = f"EXIF unreadable ({type(exc).__name__}: {exc})"
            raw_exif = image.info.get("exif")
            if raw_exif:
                try:
                    _binary_fields(piexif.load(raw_exif), meta)
                except Exception as exc:  # piexif raises many types on broken blocks
                    meta.exif_error = f"EXIF block broken, GPS and maker note not read ({type(exc).__name__}: {exc})"
            _xmp(image, meta)
            _iptc(image, meta)
            # Decode the pixels (at 1/8 scale where JPEG allows) to prove the file really is an image.
            image.draft("RGB", (max(1, meta.width // 8), max(1, meta.height // 8)))
            image.load()
    except UnidentifiedImageError:
        meta.error = "not a readable image (unknown or damaged format)"
    except OSError as exc:
        meta.error = f"damaged image data: {exc}"
    except Exception as exc:  # decoders raise odd types (SyntaxError, ValueError, struct.error) on junk
        meta.error = f"damaged image: {type(exc).__name__}: {exc}"
    return meta
