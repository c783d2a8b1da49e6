#!/usr/bin/env bash
# Regenerates exiftool_oracle.json (or writes to $1), the independent oracle for what the real photos in
# shared/data contain. Made with ExifTool 12.57 (Debian package libimage-exiftool-perl):
#   exiftool -j -n -G1 -r -ext jpg -ext jpeg -DateTimeOriginal -Composite:GPSLatitude \
#            -Composite:GPSLongitude -Make -Model exif/jpg camtraps camtrapr      (run in shared/data)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/exiftool_oracle.json}")"
cd "$here/../../../shared/data"
exiftool -j -n -G1 -r -ext jpg -ext jpeg \
  -DateTimeOriginal -Composite:GPSLatitude -Composite:GPSLongitude -Make -Model \
  exif/jpg camtraps camtrapr > "$out" 2>/dev/null
