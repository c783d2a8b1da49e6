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


@cache
def species_by_scientific_name() -> dict[str, str]:
    """Scientific name (case-folded) -> the common name Herdbook uses for it (the table's own name for itself)."""
    out: dict[str, str] = {}
    for value in species_table().values():
        if value.get("scientific_name") and value.get("common_name"):
            out.setdefault(value["scientific_name"].casefold(), value["common_name"])
    return out


def species_from_scientific(name: str | None) -> str | None:
    """What Herdbook calls the species with this scientific name (e.g. from a Camtrap DP package)."""
    if not name:
        return None
    return species_by_scientific_name().get(name.strip().casefold(), name.strip())
