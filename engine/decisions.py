"""Reviewer decisions, shared by the app and the command line: confirm, reject, name a new individual,
merge two individuals, set a detection's species, undo. Every one is a row in an append-only log with who
and when; nothing is updated in place except ``individuals.merged_into``, which mirrors the merge log.

Rules (Herdbook's policy):
* An individual's code is unique within its species. Naming a "new" individual with a code that already
  exists is refused with :class:`ExistingIndividual`, which names the existing one so the caller can offer
  to confirm it instead: a typo never makes a second "100".
* A detection is never confirmed as an individual of another species when both species are known.
* Undo cancels the latest decision *of the same reviewer*; one reviewer's undo never cancels another's.
* A merge is a decision too: logged, undoable, and it never deletes the merged-away individual's history.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import DETECTION_TRAILS, Catalogue, utc_now
from .match import known_species
from .side import SIDES


class DecisionError(Exception):
    """A decision that Herdbook refuses, with the reason in words."""


@dataclass
class ExistingIndividual(DecisionError):
    individual_id: int
    code: str
    species: str

    def __str__(self) -> str:
        return f"individual {self.code!r} ({self.species}) exists already: confirm it instead of creating a new one"


def detection_species(cat: Catalogue, detection_id: int) -> str | None:
    """The detection's own species if a reviewer set it, else its photo's (folder, tag, import option)."""
    row = cat.db.execute(
        "SELECT d.species, m.species, d.label FROM detections d JOIN media m ON m.id = d.media_id WHERE d.id = ?",
        [detection_id],
    ).fetchone()
    if row is None:
        raise DecisionError(f"no detection {detection_id}")
    for value in row:
        if known_species(value):
            return value
    return None


def resolve_individual(cat: Catalogue, individual_id: int) -> int:
    """Follow merges to the individual that stands now."""
    seen = set()
    while individual_id not in seen:
        seen.add(individual_id)
        row = cat.db.execute("SELECT merged_into FROM individuals WHERE id = ?", [individual_id]).fetchone()
        if row is None:
            raise DecisionError(f"no individual {individual_id}")
        if row[0] is None:
            return individual_id
        individual_id = row[0]
    raise DecisionError(f"individual {individual_id}: merge cycle")


def find_individual(cat: Catalogue, code: str, species: str | None) -> dict | None:
    """The standing individual with this code (in this species when known); None if there is none.
    Raises when the code exists in several species and none was given."""
    sql = "SELECT * FROM individuals WHERE code = ? AND merged_into IS NULL"
    rows = cat.query(sql + " AND species = ?", [code, species]) if known_species(species) else cat.query(sql, [code])
    if len(rows) > 1:
        names = ", ".join(sorted(r["species"] for r in rows))
        raise DecisionError(f"individual {code!r} exists in several species ({names}): say which")
    return rows[0] if rows else None


def _check_species(cat: Catalogue, detection_id: int, individual_id: int) -> None:
    det_species = detection_species(cat, detection_id)
    ind_species = cat.db.execute("SELECT species FROM individuals WHERE id = ?", [individual_id]).fetchone()[0]
    if det_species and known_species(ind_species) and det_species.casefold() != ind_species.casefold():
        raise DecisionError(
            f"detection {detection_id} is a {det_species}; individual {individual_id} is a {ind_species}: "
            "set the detection's species first if it is wrong"
        )


def confirm(cat: Catalogue, detection_id: int, individual_id: int, who: str, score: float | None = None) -> int:
    individual_id = resolve_individual(cat, individual_id)
    _check_species(cat, detection_id, individual_id)
    return cat.confirm(detection_id, individual_id, who=who, score=score)


def reject(cat: Catalogue, detection_id: int, individual_id: int | None, who: str) -> int:
    return cat.reject(detection_id, individual_id, who=who)


def name_new_individual(
    cat: Catalogue,
    detection_ids: int | list[int],
    code: str,
    who: str,
    species: str | None = None,
    name: str | None = None,
) -> int:
    """Create individual ``code`` and confirm the detection(s) as it, in one transaction.

    Raises :class:`ExistingIndividual` when the code is taken in that species (or, species unknown, in any)."""
    dets = [detection_ids] if isinstance(detection_ids, int) else list(detection_ids)
    code = code.strip()
    if not code:
        raise DecisionError("an individual needs a code")
    species = known_species(species) or detection_species(cat, dets[0])
    existing = find_individual(cat, code, species)
    if existing is not None:
        raise ExistingIndividual(existing["id"], existing["code"], existing["species"])
    if species is None:
        raise DecisionError(f"species of detection {dets[0]} unknown: set it before naming a new individual")
    with cat.transaction():
        ind = cat.ensure_individual(code, species, name=name)
        for det in dets:
            cat.confirm(det, ind, who=who)
    return ind


def set_detection_species(cat: Catalogue, detection_id: int, species: str, who: str) -> None:
    """The reviewer says which species a detection shows (logged in the detection's note trail)."""
    if not known_species(species):
        raise DecisionError(f"{species!r} is not a species name")
    with cat.transaction():
        record_species(cat, detection_id, species, who)


def record_species(cat: Catalogue, detection_id: int, species: str, who: str) -> None:
    """Set a detection's species with its trail row (who said so, when), in the caller's transaction: a reviewer,
    or a classifier whose labels came with the boxes."""
    cat.db.execute("UPDATE detections SET species = ? WHERE id = ?", [species.strip(), detection_id])
    cat.db["species_changes"].insert(
        {"detection_id": detection_id, "species": species.strip(), "who": who, "at": utc_now()}
    )


def set_detection_side(cat: Catalogue, detection_id: int, side: str | None, who: str) -> None:
    """The reviewer says which flank a detection shows ('left', 'right', or None: not known), with its trail row.
    It decides which gallery photos the detection is compared with once confirmed (engine.match)."""
    if side is not None and side not in SIDES:
        raise DecisionError(f"{side!r} is not a side: left, right or none")
    with cat.transaction():
        record_side(cat, detection_id, side, who)


def record_side(cat: Catalogue, detection_id: int, side: str | None, who: str) -> None:
    """Set a detection's side with its trail row, in the caller's transaction: a reviewer, or the model that
    inferred it from the crop (engine.pipeline, only where nobody had given one)."""
    cat.db.execute("UPDATE detections SET viewpoint = ? WHERE id = ?", [side, detection_id])
    cat.db["side_changes"].insert({"detection_id": detection_id, "side": side, "who": who, "at": utc_now()})


def settle_changes(cat: Catalogue, trail: str, detection_ids: list[int]) -> None:
    """Set each detection's side (trail 'side_changes') or species ('species_changes') to its trail's latest row
    by time, in the caller's transaction. Rows that arrive from another catalogue (engine.sync) may be older than
    one made here: the change made last stands at every catalogue, whatever order the rows arrived in."""
    column, value = DETECTION_TRAILS[trail]
    for start in range(0, len(detection_ids), 500):
        chunk = detection_ids[start : start + 500]
        cat.db.execute(
            f"UPDATE detections SET {column} = (SELECT c.{value} FROM {trail} c WHERE c.detection_id = detections.id "
            f"ORDER BY c.at DESC, c.id DESC LIMIT 1) WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )


def side_of(cat: Catalogue, detection_id: int) -> tuple[str | None, str | None]:
    """A detection's side and who said so last (None: given at import, or never given)."""
    rows = cat.query("SELECT viewpoint FROM detections WHERE id = ?", [detection_id])
    if not rows:
        raise DecisionError(f"no detection {detection_id}")
    trail = cat.query(
        "SELECT who FROM side_changes WHERE detection_id = ? ORDER BY at DESC, id DESC LIMIT 1", [detection_id]
    )
    return rows[0]["viewpoint"], trail[0]["who"] if trail else None


def merge(cat: Catalogue, keep_id: int, merge_id: int, who: str) -> int:
    """``merge_id`` becomes the same animal as ``keep_id`` (which survives, with both histories)."""
    keep_id, merge_id = resolve_individual(cat, keep_id), resolve_individual(cat, merge_id)
    if keep_id == merge_id:
        raise DecisionError("an individual cannot be merged into itself")
    species = {
        r["species"] for r in cat.query("SELECT species FROM individuals WHERE id IN (?, ?)", [keep_id, merge_id])
    }
    if len({s.casefold() for s in species if known_species(s)}) > 1:
        raise DecisionError(f"individuals {keep_id} and {merge_id} are of different species ({', '.join(species)})")
    with cat.transaction():
        cat.db.execute("UPDATE individuals SET merged_into = ? WHERE id = ?", [keep_id, merge_id])
        # Individuals merged into merge_id earlier follow it.
        cat.db.execute("UPDATE individuals SET merged_into = ? WHERE merged_into = ?", [keep_id, merge_id])
        return cat.db["merges"].insert({"kept_id": keep_id, "merged_id": merge_id, "who": who, "at": utc_now()}).last_pk


def undo_merge(cat: Catalogue, who: str) -> dict | None:
    """Cancel this reviewer's latest merge not yet undone; returns it, or None."""
    rows = cat.query(
        """SELECT * FROM merges m WHERE m.undoes IS NULL AND m.who = ?
           AND NOT EXISTS (SELECT 1 FROM merges u WHERE u.undoes = m.id) ORDER BY m.id DESC LIMIT 1""",
        [who],
    )
    if not rows:
        return None
    row = rows[0]
    with cat.transaction():
        cat.db.execute("UPDATE individuals SET merged_into = NULL WHERE id = ?", [row["merged_id"]])
        cat.db["merges"].insert(
            {"kept_id": row["kept_id"], "merged_id": row["merged_id"], "who": who, "at": utc_now(), "undoes": row["id"]}
        )
    return row


def undo_last(cat: Catalogue, who: str, detection_id: int | None = None) -> dict | None:
    """Cancel this reviewer's latest decision; returns what was undone (status, detection, code), or None."""
    undone = cat.undo_last(who, detection_id)
    if undone is None:
        return None
    return cat.query(
        """SELECT a.id, a.detection_id, a.status, i.code FROM assignments a
           LEFT JOIN individuals i ON i.id = a.individual_id WHERE a.id = ?""",
        [undone],
    )[0]


def describe(decision: dict) -> str:
    """'confirmed detection 54 as 104', for the status line after an undo."""
    what = {"confirmed": "confirmation", "rejected": "rejection"}.get(decision["status"], decision["status"])
    target = f" as {decision['code']}" if decision.get("code") else ""
    return f"{what} of detection {decision['detection_id']}{target}"
