"""Where bundled files live, in the source tree and in a PyInstaller build alike."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import yaml


def resources_dir() -> Path:
    """The `resources/` folder: beside the packages in a checkout, under sys._MEIPASS in a frozen build."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


@cache
def species_table() -> dict[str, dict]:
    with open(resources_dir() / "config" / "species.yaml", encoding="utf-8") as fh:
        table = yaml.safe_load(fh)["species"]
    return {key.casefold(): value for key, value in table.items()}


def species_info(name: str | None) -> dict:
    """Scientific and common name for what a user called a species; unknown names pass through."""
    if not name:
        return {"scientific_name": None, "common_name": None}
    return species_table().get(name.casefold(), {"scientific_name": None, "common_name": name})
