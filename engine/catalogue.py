"""The catalogue: one SQLite file, through sqlite-utils, that holds everything Herdbook knows.

WAL mode, foreign keys on, a ``schema_version`` table and forward-only migrations. Decisions about which
individual a detection shows live in ``assignments``, an append-only log: nothing is updated or deleted
there; an undo is a new row pointing at the row it cancels. The views ``effective_assignments`` and
``sightings`` derive the current state from that log.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from .postgres import WRITER_LOCK, is_postgres_url

SCHEMA_VERSION = 9
ASSIGNMENT_STATUSES = ("suggested", "confirmed", "rejected", "undo")


class CatalogueError(Exception):
    """The catalogue file cannot be used (not SQLite, locked, read-only, newer schema)."""


def utc_now() -> str:
    """Milliseconds, always three digits: two stations' decisions on one detection are ordered by this text, and
    a time of an older catalogue (seconds only, "...:30+00:00") still sorts before any of the same second."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dialect(db) -> str:
    """'sqlite' or 'postgresql': the one place the migrations ask which engine they write for."""
    return getattr(db, "dialect", "sqlite")


def _trigger(db, name: str, when: str, body: str) -> None:
    """A row trigger, written once as its statements; SQLite and PL/pgSQL wrap them differently."""
    if dialect(db) == "postgresql":
        # SQLite runs one writer at a time; on the server the derived state is kept under the same writer lock
        # (engine.postgres), or two clients deciding on one detection at once would both rewrite its row.
        lock = f"PERFORM pg_advisory_xact_lock({WRITER_LOCK});"
        db.executescript(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {lock}{body}\n RETURN NULL; "
            "END $$;"
            f"CREATE TRIGGER {name} {when} FOR EACH ROW EXECUTE FUNCTION {name}();"
        )
    else:
        db.executescript(f"CREATE TRIGGER {name} {when} BEGIN {body}\n END;")


def _append_only(db, table: str) -> None:
    """Refuse UPDATE and DELETE on a log table: decisions are only ever appended."""
    if dialect(db) == "postgresql":
        db.executescript(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{table} is an append-only log'; END $$;"
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only();"
        )
        return
    for action in ("update", "delete"):
        db.executescript(
            f"CREATE TRIGGER {table}_append_only_{action} BEFORE {action.upper()} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is an append-only log'); END;"
        )


def _migration_1(db: sqlite_utils.Database) -> None:
    db["imports"].create(
        {"id": int, "source": str, "site": str, "started_at": str, "finished_at": str, "status": str},
        pk="id",
        not_null={"source", "started_at", "status"},
    )
    db["imports"].create_index(["source"], unique=True)
    db["deployments"].create(
        {
            "id": int,
            "name": str,
            "site": str,
            "camera": str,
            "latitude": float,
            "longitude": float,
            "utc_offset": str,  # e.g. "+08:00", used for photos whose EXIF gives no offset
            "clock_offset_s": float,  # added to every raw EXIF time of this deployment
            "clock_note": str,
            "start": str,
            "end": str,
        },
        pk="id",
        not_null={"name"},
        defaults={"clock_offset_s": 0.0},
    )
    db["deployments"].create_index(["name"], unique=True)
    db["media"].create(
        {
            "id": int,
            "sha256": str,
            "path": str,
            "file_name": str,
            "import_id": int,
            "deployment_id": int,
            "kind": str,  # image | video
            "status": str,  # ok | error | not processed
            "width": int,
            "height": int,
            "taken_at": str,  # corrected by the deployment's clock offset
            "taken_at_raw": str,  # as the camera wrote it
            "time_source": str,  # exif | makernote:reconyx | xmp | NULL
            "latitude": float,
            "longitude": float,
            "altitude": float,
            "camera_make": str,
            "camera_model": str,
            "camera_serial": str,
            "orientation": int,
            "species": str,  # from folder level or XMP tag, as the user named it
            "tags": str,  # JSON list of XMP HierarchicalSubject entries
            "warnings": str,  # JSON list
            "error": str,
        },
        pk="id",
        not_null={"path", "file_name", "kind", "status"},
        foreign_keys=[("import_id", "imports", "id"), ("deployment_id", "deployments", "id")],
    )
    db["media"].create_index(["sha256"], unique=True)
    db["media"].create_index(["deployment_id"])
    # Every path a photo was seen at: a copy of a card in another folder points at the same media row.
    db["media_files"].create(
        {"path": str, "media_id": int, "import_id": int, "size": int, "mtime_ns": int},
        pk="path",
        not_null={"media_id", "import_id"},
        foreign_keys=[("media_id", "media", "id"), ("import_id", "imports", "id")],
    )
    db["media_files"].create_index(["import_id"])
    db["models"].create(
        {"id": int, "name": str, "version": str, "kind": str, "onnx_sha256": str, "card": str, "created": str},
        pk="id",
        not_null={"name", "version", "kind"},
    )
    db["models"].create_index(["name", "version"], unique=True)
    db["detections"].create(
        {
            "id": int,
            "media_id": int,
            # Box in pixels of the upright (EXIF-orientation applied) image; NULL when unknown (a tag).
            "x": float,
            "y": float,
            "w": float,
            "h": float,
            "score": float,
            "label": str,
            "source": str,  # detector name | megadetector-json | manual | whole-frame | tag
            "model_id": int,
            "viewpoint": str,
            "created_at": str,
        },
        pk="id",
        not_null={"media_id", "source"},
        foreign_keys=[("media_id", "media", "id"), ("model_id", "models", "id")],
    )
    db["detections"].create_index(["media_id"])
    db["embeddings"].create(
        {"detection_id": int, "model_id": int, "vector": bytes},
        pk=("detection_id", "model_id"),
        foreign_keys=[("detection_id", "detections", "id"), ("model_id", "models", "id")],
    )
    db["individuals"].create(
        {
            "id": int,
            "code": str,
            "name": str,
            "species": str,
            "notes": str,
            "created_at": str,
            "merged_into": int,
        },
        pk="id",
        not_null={"code", "species"},
        foreign_keys=[("merged_into", "individuals", "id")],
    )
    db["individuals"].create_index(["species", "code"], unique=True)
    db["assignments"].create(
        {
            "id": int,
            "detection_id": int,
            "individual_id": int,
            "status": str,
            "score": float,
            "rank": int,
            "who": str,
            "at": str,
            "undoes": int,
            "note": str,
        },
        pk="id",
        not_null={"detection_id", "status", "who", "at"},
        foreign_keys=[
            ("detection_id", "detections", "id"),
            ("individual_id", "individuals", "id"),
            ("undoes", "assignments", "id"),
        ],
    )
    db["assignments"].create_index(["detection_id"])
    db["assignments"].create_index(["undoes"])
    _append_only(db, "assignments")
    db.executescript(
        """
        -- Decisions (confirm/reject) that no later undo row cancels.
        CREATE VIEW effective_assignments AS
        SELECT a.* FROM assignments a
        WHERE a.status IN ('confirmed', 'rejected')
          AND NOT EXISTS (SELECT 1 FROM assignments u WHERE u.status = 'undo' AND u.undoes = a.id);

        -- One row per detection whose latest effective confirmation still stands: the sighting.
        CREATE VIEW sightings AS
        SELECT e.id AS assignment_id, e.detection_id, e.individual_id, e.score, e.who, e.at
        FROM effective_assignments e
        WHERE e.status = 'confirmed'
          AND e.id = (SELECT max(x.id) FROM effective_assignments x
                      WHERE x.detection_id = e.detection_id AND x.status = 'confirmed')
          AND NOT EXISTS (SELECT 1 FROM effective_assignments r
                          WHERE r.detection_id = e.detection_id AND r.individual_id = e.individual_id
                            AND r.status = 'rejected' AND r.id > e.id);
        """
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """The pipeline: which photo went through which stage with which model; suggestions tied to a model and,
    for a probably-new individual, to a proposal grouping the photos of one new animal."""
    db["media_stages"].create(
        {"media_id": int, "stage": str, "model_id": int, "at": str},
        pk=("media_id", "stage", "model_id"),
        foreign_keys=[("media_id", "media", "id"), ("model_id", "models", "id")],
    )
    db.execute("ALTER TABLE assignments ADD COLUMN model_id INTEGER REFERENCES models(id)")
    db.execute("ALTER TABLE assignments ADD COLUMN proposal TEXT")
    db["embeddings"].create_index(["model_id"])


def _migration_3(db: sqlite_utils.Database) -> None:
    """Merges become logged, undoable decisions; a reviewer can set a detection's species; indexes for the
    lookups the review and export make per row."""
    db["merges"].create(
        {"id": int, "kept_id": int, "merged_id": int, "who": str, "at": str, "undoes": int},
        pk="id",
        not_null={"kept_id", "merged_id", "who", "at"},
        foreign_keys=[("kept_id", "individuals", "id"), ("merged_id", "individuals", "id"), ("undoes", "merges", "id")],
    )
    _append_only(db, "merges")
    # Merges made before the log existed keep their state and get a log row saying so.
    db.execute(
        "INSERT INTO merges (kept_id, merged_id, who, at) SELECT merged_into, id, 'migration:3', ? "
        "FROM individuals WHERE merged_into IS NOT NULL",
        [utc_now()],
    )
    db.execute("ALTER TABLE detections ADD COLUMN species TEXT")
    db["species_changes"].create(
        {"id": int, "detection_id": int, "species": str, "who": str, "at": str},
        pk="id",
        foreign_keys=[("detection_id", "detections", "id")],
    )
    db["assignments"].create_index(["individual_id"])
    db["assignments"].create_index(["who"])
    db["individuals"].create_index(["merged_into"])


def _migration_4(db: sqlite_utils.Database) -> None:
    """Coat-pattern keypoints per detection (engine.pattern), stored once so that verifying a candidate costs
    only the matching. ``method`` names the feature recipe: features of another recipe are recomputed."""
    db["patterns"].create(
        {"detection_id": int, "method": str, "features": bytes},
        pk="detection_id",
        not_null={"method", "features"},
        foreign_keys=[("detection_id", "detections", "id")],
    )


_NOT_UNDONE = "NOT EXISTS (SELECT 1 FROM assignments u WHERE u.undoes = {0}.id AND u.status = 'undo')"
# A detection has a standing decision: a confirmation or rejection that no undo cancels.
_DECIDED_A = (
    "SELECT 1 FROM assignments x WHERE x.detection_id = a.detection_id AND x.status IN ('confirmed', 'rejected')"
    " AND " + _NOT_UNDONE.format("x")
)


def _standing_sql(later: str) -> str:
    """What the sightings view of schema 1 said, written on the log's own indexes (detection_id, undoes): a
    confirmation ``e`` stands when no undo cancels it and no ``later`` standing decision ``r`` on its detection is
    another confirmation or a rejection of the same individual."""
    return (
        _NOT_UNDONE.format("e") + " AND NOT EXISTS (SELECT 1 FROM assignments r WHERE r.detection_id = e.detection_id"
        f" AND {later} AND (r.status = 'confirmed' OR (r.status = 'rejected' AND r.individual_id = e.individual_id))"
        " AND " + _NOT_UNDONE.format("r") + ")"
    )


def _keep_state_body(standing: str) -> str:
    """The trigger's statements: re-derive one detection's sighting and queue rows from its log rows."""
    return f"""
            DELETE FROM sighting_state WHERE detection_id = NEW.detection_id;
            INSERT INTO sighting_state (assignment_id, detection_id, individual_id, score, who, at)
                SELECT e.id, e.detection_id, e.individual_id, e.score, e.who, e.at FROM assignments e
                WHERE e.detection_id = NEW.detection_id AND e.status = 'confirmed' AND {standing};
            DELETE FROM review_queue WHERE detection_id = NEW.detection_id;
            INSERT INTO review_queue (detection_id, model_id, taken_at)
                SELECT NEW.detection_id, max(a.model_id),
                       (SELECT m.taken_at FROM detections d JOIN media m ON m.id = d.media_id
                        WHERE d.id = NEW.detection_id)
                FROM assignments a WHERE a.detection_id = NEW.detection_id AND a.status = 'suggested'
                  AND NOT EXISTS ({_DECIDED_A})
                HAVING count(*) > 0;"""


def _migration_5(db: sqlite_utils.Database) -> None:
    """A field season's catalogue (issue 13): the current state derived from the decision log is kept in two
    tables by a trigger on every log row, so that the review queue, counts and exports read it through indexes
    instead of re-deriving it from the whole log on each key press.

    * ``sighting_state``: one row per detection whose confirmation stands (what the ``sightings`` view gave);
      the view now reads this table.
    * ``review_queue``: one row per detection with suggestions and no standing decision, with the model of its
      latest suggestions and its photo's time (the queue's order).
    The log stays the truth: both tables are re-derived for the one detection a new log row is about."""
    standing, decided_a = _standing_sql("r.id > e.id"), _DECIDED_A
    db.executescript(
        f"""
        -- Undo rows are few: a partial index keeps 'is this row undone?' one lookup, whatever ANALYZE says
        -- about the mostly-NULL undoes column (which made the planner scan the whole log for each row).
        CREATE INDEX assignments_undone ON assignments(undoes) WHERE status = 'undo';
        CREATE TABLE sighting_state (
            detection_id INTEGER PRIMARY KEY REFERENCES detections(id),
            assignment_id INTEGER NOT NULL, individual_id INTEGER, score REAL, who TEXT, at TEXT);
        CREATE INDEX sighting_state_individual ON sighting_state(individual_id);
        INSERT INTO sighting_state (assignment_id, detection_id, individual_id, score, who, at)
            SELECT e.id, e.detection_id, e.individual_id, e.score, e.who, e.at FROM assignments e
            WHERE e.status = 'confirmed' AND {standing};
        DROP VIEW sightings;
        CREATE VIEW sightings AS
            SELECT assignment_id, detection_id, individual_id, score, who, at FROM sighting_state;

        CREATE TABLE review_queue (
            detection_id INTEGER PRIMARY KEY REFERENCES detections(id), model_id INTEGER, taken_at TEXT);
        CREATE INDEX review_queue_order ON review_queue(model_id, taken_at, detection_id);
        INSERT INTO review_queue (detection_id, model_id, taken_at)
            SELECT a.detection_id, max(a.model_id), m.taken_at
            FROM assignments a JOIN detections d ON d.id = a.detection_id JOIN media m ON m.id = d.media_id
            WHERE a.status = 'suggested' AND NOT EXISTS ({decided_a})
            GROUP BY a.detection_id, m.taken_at;
        """
    )
    keep_state = _keep_state_body(standing)
    # A corrected camera clock moves the photos in the queue too.
    time_keeps_queue = """
            UPDATE review_queue SET taken_at = NEW.taken_at
            WHERE detection_id IN (SELECT id FROM detections WHERE media_id = NEW.id);"""
    _trigger(db, "assignments_keep_state", "AFTER INSERT ON assignments", keep_state)
    _trigger(db, "media_time_keeps_queue", "AFTER UPDATE OF taken_at ON media", time_keeps_queue)
    # No index on assignments(status, ...): with one, SQLite answers "has this detection a suggestion?" by
    # scanning every suggestion of the model instead of the detection's few rows (quadratic at 100k). The queue
    # keeps its own time order, so media needs no index on taken_at.


# Tables whose rows travel between catalogues (engine.sync), each row with a stable id.
SYNCED_TABLES = ("deployments", "media", "detections", "individuals", "assignments", "merges")


def _migration_6(db) -> None:
    """Several stations, one population (issue 14): ids that mean the same row in every catalogue.

    A catalogue gets a UUID of its own; a row that came from another catalogue keeps where it came from
    (``origin``: that catalogue's UUID) and its id there (``origin_id``). A row's stable id is therefore
    (origin, origin_id), or (this catalogue's UUID, id) for a row made here: nothing is renumbered and the
    local integer keys stay what every query joins on. ``thumbnails`` holds small crops that travel instead of
    the photos; ``stations`` names the catalogues a central one has heard from."""
    db["catalogue_info"].create({"key": str, "value": str}, pk="key")
    db["catalogue_info"].insert({"key": "uuid", "value": str(uuid.uuid4())})
    for table in SYNCED_TABLES:
        db.execute(f"ALTER TABLE {table} ADD COLUMN origin TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN origin_id INTEGER")
        db.execute(f"CREATE UNIQUE INDEX {table}_origin ON {table}(origin, origin_id)")
    db["thumbnails"].create(
        {"detection_id": int, "jpeg": bytes},
        pk="detection_id",
        not_null={"jpeg"},
        foreign_keys=[("detection_id", "detections", "id")],
    )
    db["stations"].create({"uuid": str, "name": str, "last_sync": str}, pk="uuid", not_null={"name"})
    # Decisions now arrive from other places, after later ones made here: the one made last (its time, then
    # its row) stands, wherever it was made and whenever it arrived. Rows written by one catalogue were in
    # time order already, so the sightings they derived stay as they are.
    if dialect(db) == "postgresql":
        db.executescript("DROP TRIGGER assignments_keep_state ON assignments; DROP FUNCTION assignments_keep_state();")
    else:
        db.executescript("DROP TRIGGER assignments_keep_state;")
    later = "(r.at > e.at OR (r.at = e.at AND r.id > e.id))"
    _trigger(db, "assignments_keep_state", "AFTER INSERT ON assignments", _keep_state_body(_standing_sql(later)))


def _migration_7(db) -> None:
    """Which flank a detection shows (detections.viewpoint) gets a trail like its species: who said so and when,
    a reviewer or the model that inferred it from the crop (engine.side)."""
    db["side_changes"].create(
        {"id": int, "detection_id": int, "side": str, "who": str, "at": str},
        pk="id",
        foreign_keys=[("detection_id", "detections", "id")],
    )
    db["side_changes"].create_index(["detection_id"])


def _migration_8(db) -> None:
    """A detection's suggestions are made again when its side or species changes after them (engine.pipeline.
    pending_suggestion asks, for each detection, when its species last changed): that needs this index, as
    side_changes has one."""
    db["species_changes"].create_index(["detection_id"])


# The trails of a detection's side and species: each trail table -> (the detections column it sets, its own column
# holding the value). They travel between catalogues (engine.sync), so a flank corrected at a station after its
# photos were synced is not lost centrally, and a new row makes the detection's suggestions pending again.
DETECTION_TRAILS = {"side_changes": ("viewpoint", "side"), "species_changes": ("species", "species")}


def _migration_9(db) -> None:
    """Side and species corrections travel between catalogues (engine.sync): their rows get stable ids, as the
    decision log's did in migration 6, and ``arrived``, when a row made elsewhere reached this catalogue (NULL for
    one made here). ``at`` says which change was made last; ``arrived`` says which suggestions were made before a
    change was known here (engine.pipeline.pending_suggestion)."""
    for table in DETECTION_TRAILS:
        db.execute(f"ALTER TABLE {table} ADD COLUMN origin TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN origin_id INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN arrived TEXT")
        db.execute(f"CREATE UNIQUE INDEX {table}_origin ON {table}(origin, origin_id)")


MIGRATIONS = {
    1: _migration_1,
    2: _migration_2,
    3: _migration_3,
    4: _migration_4,
    5: _migration_5,
    6: _migration_6,
    7: _migration_7,
    8: _migration_8,
    9: _migration_9,
}


def default_catalogue_path() -> Path:
    """The one default catalogue of the command line and the app: $HERDBOOK_CATALOGUE, else ~/herdbook.sqlite."""
    return Path(os.environ.get("HERDBOOK_CATALOGUE") or Path.home() / "herdbook.sqlite")


def catalogue_target(value: str | Path) -> str | Path:
    """A catalogue as the user named it: a central catalogue's URL stays a string, a file becomes a Path."""
    return str(value) if is_postgres_url(str(value)) else Path(value)


def catalogue_files(target: str | Path) -> Path:
    """Where the files that live beside a catalogue go (its gallery cache, trained models): beside the file,
    or for a central catalogue a folder of this machine's cache (engine.postgres.side_path)."""
    if is_postgres_url(str(target)):
        from .postgres import side_path

        return side_path(str(target))
    return Path(target)


def shift_time(iso: str | None, seconds: float) -> str | None:
    """Add a clock correction to an ISO 8601 time, keeping its precision and offset."""
    if not iso or not seconds:
        return iso
    moved = datetime.fromisoformat(iso) + timedelta(seconds=seconds)
    return moved.isoformat(timespec="microseconds" if "." in iso else "seconds")


class Catalogue:
    """An open catalogue file. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, create: bool = True, busy_timeout_s: float = 5.0):
        if is_postgres_url(path):
            self._open_postgres(str(path), create, busy_timeout_s)
            return
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.is_dir():
            raise CatalogueError(f"{self.path}: is a folder, not a catalogue file")
        if not create and not self.path.exists():
            raise CatalogueError(f"{self.path}: no such catalogue")
        # The file is never opened by anything but SQLite: closing any other descriptor on a live database
        # drops every POSIX lock this process holds on it, and a later connection elsewhere then deletes the
        # WAL under the open app ("How To Corrupt An SQLite Database File", section 2.2). SQLite itself says
        # "file is not a database" on the first read, which is turned into a clear message below.
        mode = "rwc" if create else "rw"
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, timeout=busy_timeout_s, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise CatalogueError(f"{self.path}: cannot open catalogue ({exc})") from exc
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.enable_wal()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc):
                raise CatalogueError(f"{self.path}: not a Herdbook catalogue (not an SQLite file)") from exc
            if isinstance(exc, sqlite3.OperationalError):
                raise CatalogueError(f"{self.path}: cannot use catalogue ({exc})") from exc
            raise CatalogueError(f"{self.path}: catalogue is damaged ({exc})") from exc
        except CatalogueError:
            conn.close()
            raise

    def _open_postgres(self, url: str, create: bool, timeout_s: float) -> None:
        """A central catalogue on a PostgreSQL server. Files that live beside an SQLite catalogue (the gallery
        cache, trained models) go to a folder of this machine's cache named after the server and database."""
        import psycopg

        from .postgres import PostgresDatabase, redacted, side_path

        self.location = redacted(url)
        self.path = side_path(url)
        try:
            self.db = PostgresDatabase(url, connect_timeout_s=timeout_s)
        except psycopg.Error as exc:
            raise CatalogueError(f"{self.location}: cannot open catalogue ({str(exc).strip()})") from exc
        try:
            if not create and "schema_version" not in self.db.table_names():
                raise CatalogueError(f"{self.location}: no Herdbook catalogue in this database")
            self._migrate()
        except psycopg.Error as exc:
            self.db.close()
            raise CatalogueError(f"{self.location}: cannot use catalogue ({str(exc).strip()})") from exc
        except CatalogueError:
            self.db.close()
            raise

    @property
    def uuid(self) -> str:
        """This catalogue's own id: the ``origin`` its rows carry in other catalogues."""
        return self.db.execute("SELECT value FROM catalogue_info WHERE key = 'uuid'").fetchone()[0]

    @property
    def display_name(self) -> str:
        """The file's name, or the server URL without its password."""
        return self.location if self.dialect == "postgresql" else self.path.name

    @property
    def target(self) -> str:
        """What opens this catalogue again (a file path, or the server URL): for a subprocess or a worker."""
        return self.db.url if self.dialect == "postgresql" else str(self.path)

    @property
    def dialect(self) -> str:
        return dialect(self.db)

    # -- housekeeping -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        if "schema_version" not in self.db.table_names():
            with self.transaction():  # two processes opening a new catalogue at once: one creates it
                names = [t for t in self.db.table_names() if not t.startswith("sqlite_")]
                if names and "schema_version" not in names:
                    kind = "a PostgreSQL database" if self.dialect == "postgresql" else "an SQLite file"
                    raise CatalogueError(f"{self.location}: {kind}, but not a Herdbook catalogue")
                if not names:
                    self.db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
        current = self.version
        if current > SCHEMA_VERSION:
            raise CatalogueError(
                f"{self.location}: catalogue schema {current} is newer than this Herdbook ({SCHEMA_VERSION})"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                if self.version >= version:  # another process migrated meanwhile
                    continue
                MIGRATIONS[version](self.db)
                self.db["schema_version"].insert({"version": version, "applied_at": utc_now()})

    @property
    def version(self) -> int:
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: everything inside is committed together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, sql: str, params=()) -> list[dict]:
        return list(self.db.query(sql, params))

    def stream(self, sql: str, params=()) -> Iterator[dict]:
        """The rows of a SELECT too large to hold (exports), a few at a time on either backend: SQLite's cursor
        reads as it goes; PostgreSQL's is a server-side one."""
        return self.db.stream(sql, params) if self.dialect == "postgresql" else self.db.query(sql, params)

    def counts(self) -> dict[str, int]:
        """Row counts of the main tables, for overviews and tests."""
        tables = ["media", "media_files", "deployments", "detections", "embeddings", "individuals", "assignments"]
        out = {t: self.db[t].count for t in tables}
        out["sightings"] = self.db.execute("SELECT count(*) FROM sightings").fetchone()[0]
        return out

    # -- deployments --------------------------------------------------------------------------------
    def ensure_deployment(self, name: str, **fields) -> int:
        row = self.db.execute("SELECT id FROM deployments WHERE name = ?", [name]).fetchone()
        if row:
            return row[0]
        return self.db["deployments"].insert({"name": name, "clock_offset_s": 0.0, **fields}).last_pk

    def deployment(self, name: str) -> dict:
        rows = self.query("SELECT * FROM deployments WHERE name = ?", [name])
        if not rows:
            raise KeyError(f"no deployment named {name!r}")
        return rows[0]

    def update_deployment(self, name: str, **fields) -> None:
        """Set a deployment's place, camera or time zone (not its clock offset: see set_clock_offset)."""
        if "clock_offset_s" in fields:
            raise ValueError("use set_clock_offset to change a deployment's clock")
        self.db["deployments"].update(self.deployment(name)["id"], fields)

    def set_clock_offset(self, name: str, seconds: float, note: str | None = None) -> int:
        """Correct a deployment's camera clock; re-derives taken_at of all its photos. Returns photos moved."""
        dep = self.deployment(name)
        with self.transaction():
            self.db["deployments"].update(dep["id"], {"clock_offset_s": float(seconds), "clock_note": note})
            rows = self.query(
                "SELECT id, taken_at_raw FROM media WHERE deployment_id = ? AND taken_at_raw IS NOT NULL",
                [dep["id"]],
            )
            for row in rows:
                self.db["media"].update(row["id"], {"taken_at": shift_time(row["taken_at_raw"], seconds)})
        return len(rows)

    def set_clock_from_reference(self, name: str, media_id: int, true_time: str) -> float:
        """'This photo was really taken at T': derive and apply the deployment's clock offset."""
        raw = self.db["media"].get(media_id)["taken_at_raw"]
        if not raw:
            raise ValueError(f"media {media_id} has no camera time to correct")
        raw_dt, true_dt = datetime.fromisoformat(raw), datetime.fromisoformat(true_time)
        if (raw_dt.tzinfo is None) != (true_dt.tzinfo is None):
            raw_dt, true_dt = raw_dt.replace(tzinfo=None), true_dt.replace(tzinfo=None)
        offset = (true_dt - raw_dt).total_seconds()
        self.set_clock_offset(name, offset, note=f"media {media_id} was taken at {true_time}")
        return offset

    # -- models and pipeline stages ------------------------------------------------------------------------
    def ensure_model(
        self, name: str, version: str, kind: str, onnx_sha256: str | None = None, card: dict | None = None
    ) -> int:
        row = self.db.execute("SELECT id FROM models WHERE name = ? AND version = ?", [name, version]).fetchone()
        if row:
            return row[0]
        return (
            self.db["models"]
            .insert(
                {
                    "name": name,
                    "version": version,
                    "kind": kind,
                    "onnx_sha256": onnx_sha256,
                    "card": json.dumps(card) if card else None,
                    "created": utc_now(),
                }
            )
            .last_pk
        )

    def stage_done(self, media_id: int, stage: str, model_id: int) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM media_stages WHERE media_id = ? AND stage = ? AND model_id = ?",
                [media_id, stage, model_id],
            ).fetchone()
            is not None
        )

    def mark_stage(self, media_id: int, stage: str, model_id: int) -> None:
        self.db["media_stages"].insert(
            {"media_id": media_id, "stage": stage, "model_id": model_id, "at": utc_now()}, ignore=True
        )

    # -- individuals --------------------------------------------------------------------------------
    def ensure_individual(self, code: str, species: str, name: str | None = None) -> int:
        row = self.db.execute("SELECT id FROM individuals WHERE species = ? AND code = ?", [species, code]).fetchone()
        if row:
            return row[0]
        return (
            self.db["individuals"]
            .insert({"code": code, "species": species, "name": name, "created_at": utc_now()})
            .last_pk
        )

    # -- detections and the decision log ------------------------------------------------------------
    def add_detection(self, media_id: int, box=None, **fields) -> int:
        x, y, w, h = box if box is not None else (None, None, None, None)
        row = {"media_id": media_id, "x": x, "y": y, "w": w, "h": h, "created_at": utc_now(), **fields}
        return self.db["detections"].insert(row).last_pk

    def record(
        self,
        detection_id: int,
        individual_id: int | None,
        status: str,
        who: str,
        score: float | None = None,
        rank: int | None = None,
        note: str | None = None,
        undoes: int | None = None,
        model_id: int | None = None,
        proposal: str | None = None,
    ) -> int:
        """Append one row to the decision log."""
        if status not in ASSIGNMENT_STATUSES:
            raise ValueError(f"unknown assignment status {status!r}")
        row = {
            "detection_id": detection_id,
            "individual_id": individual_id,
            "status": status,
            "score": score,
            "rank": rank,
            "who": who,
            "at": utc_now(),
            "undoes": undoes,
            "note": note,
            "model_id": model_id,
            "proposal": proposal,
        }
        return self.db["assignments"].insert(row).last_pk

    def record_suggestions(self, rows: list[dict], who: str, model_id: int) -> None:
        """Append many 'suggested' rows at once (the suggest stage writes six per detection): one executemany, not
        one sqlite-utils insert each. rows: detection_id, individual_id, score, rank, note, proposal."""
        at = utc_now()
        self.db.conn.executemany(
            "INSERT INTO assignments (detection_id, individual_id, status, score, rank, who, at, note, model_id, "
            "proposal) VALUES (?, ?, 'suggested', ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r["detection_id"],
                    r["individual_id"],
                    r["score"],
                    r["rank"],
                    who,
                    at,
                    r.get("note"),
                    model_id,
                    r.get("proposal"),
                )
                for r in rows
            ],
        )

    def confirm(self, detection_id: int, individual_id: int, who: str, score: float | None = None) -> int:
        return self.record(detection_id, individual_id, "confirmed", who, score=score)

    def reject(self, detection_id: int, individual_id: int | None, who: str) -> int:
        return self.record(detection_id, individual_id, "rejected", who)

    def undo_last(self, who: str, detection_id: int | None = None) -> int | None:
        """Cancel ``who``'s latest decision not yet undone; returns the undone id. One reviewer's undo never
        cancels another's; naming a detection undoes its latest decision, whoever made it (a deliberate fix)."""
        if detection_id is None:
            sql, params = "SELECT id, detection_id FROM effective_assignments WHERE who = ?", [who]
        else:
            sql, params = "SELECT id, detection_id FROM effective_assignments WHERE detection_id = ?", [detection_id]
        row = self.db.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        if not row:
            return None
        self.record(row[1], None, "undo", who, undoes=row[0])
        return row[0]

    def sighting_of(self, detection_id: int) -> dict | None:
        rows = self.query("SELECT * FROM sightings WHERE detection_id = ?", [detection_id])
        return rows[0] if rows else None
