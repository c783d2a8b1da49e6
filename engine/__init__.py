"""Herdbook's core: ingest, catalogue, detection, re-identification, matching, export, metrics (no Qt, no torch)."""

# Phones write HEIC/HEIF: pillow-heif teaches Pillow to open them (pixels and EXIF) wherever the engine opens photos.
from pillow_heif import register_heif_opener

register_heif_opener()
