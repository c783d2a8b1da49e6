"""The catalogue on a PostgreSQL server (a central catalogue for several stations), behind the same small
database surface that the SQLite catalogue gets from sqlite-utils.

Herdbook's domain code is written once, in SQL that both engines read, against ``execute``, ``query``,
``db[table].insert/update/upsert/get/count`` and ``create``/``create_index``. This module gives a PostgreSQL
connection that surface, and turns the few SQLite spellings the code uses into PostgreSQL's:

* placeholders ``?`` and ``:name`` -> ``%s`` and ``%(name)s`` (and a literal ``%`` -> ``%%``);
* ``INSERT OR IGNORE`` -> ``INSERT ... ON CONFLICT DO NOTHING``;
* ``BEGIN IMMEDIATE`` (SQLite's one writer at a time) -> ``BEGIN`` plus a transaction-scoped advisory lock,
  so writers queue exactly as they do on SQLite and read-then-write steps (a new individual's code, the
  decision log) keep their meaning;
* tables without a single integer key get a ``rowid`` identity column, as every SQLite table has one.

Triggers are the one thing written twice (PL/pgSQL here, SQLite's in engine.catalogue).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# One advisory lock key for "a writer holds the catalogue" (any 64-bit number; this one spells HERDBOOK).
WRITER_LOCK = 0x4845524442_4F4F4B

_TYPES = {int: "BIGINT", str: "TEXT", float: "DOUBLE PRECISION", bytes: "BYTEA"}


def is_postgres_url(target) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """The URL without its password, for messages and window titles."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def side_path(url: str) -> Path:
    """Where the files an SQLite catalogue keeps beside itself go for a server catalogue: a name under this
    machine's cache folder (the gallery cache, trained models, suggest marks), one per server and database."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    name = "_".join(str(info.get(k) or "") for k in ("host", "port", "dbname"))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "herdbook" / "central"
    return cache / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".postgresql")


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"])*\"|--[^\n]*|\?|(?<!:):([A-Za-z_]\w*)|%")


def translate(sql: str, named: bool = False) -> str:
    """SQLite-flavoured SQL as Herdbook writes it -> PostgreSQL with psycopg placeholders."""

    def token(m: re.Match) -> str:
        text = m.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if m.group(1) is not None:
            return f"%({m.group(1)})s" if named else text
        return text.replace("%", "%%") if text.startswith("'") else text

    out = _TOKEN.sub(token, sql)
    stripped = out.lstrip()
    if re.match(r"(?i)INSERT\s+OR\s+IGNORE\s+INTO", stripped):
        out = re.sub(r"(?i)INSERT\s+OR\s+IGNORE\s+INTO", "INSERT INTO", out, count=1).rstrip().rstrip(";")
        out += " ON CONFLICT DO NOTHING"
    return out


def _params(params):
    """Always hand psycopg a parameter container: it then reads every ``%`` as ours (escaped by translate)."""
    return params if isinstance(params, dict) else list(params or ())


class Cursor:
    """What callers use of a sqlite3 cursor: fetchone/fetchall/iteration over tuples."""

    def __init__(self, cursor):
        self._cursor = cursor

    def fetchone(self):
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self):
        return self._cursor.fetchall() if self._cursor.description else []

    def fetchmany(self, size: int):
        return self._cursor.fetchmany(size) if self._cursor.description else []

    def __iter__(self):
        return iter(self.fetchall()) if self._cursor.description else iter(())

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self):
        return self._cursor.description


class Connection:
    """The sqlite3-connection calls the code makes on ``db.conn`` (execute, executemany)."""

    def __init__(self, database: PostgresDatabase):
        self._db = database

    def execute(self, sql: str, params=()) -> Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable) -> None:
        rows = list(rows)
        if not rows:
            return
        named = isinstance(rows[0], dict)
        with self._db.raw.cursor() as cur:
            cur.executemany(translate(sql, named), rows)


class PostgresDatabase:
    """A psycopg connection in autocommit mode (transactions are explicit, as on the SQLite side)."""

    dialect = "postgresql"

    def __init__(self, url: str, connect_timeout_s: float = 10.0):
        import psycopg
        from psycopg.types.numeric import FloatLoader

        self.url = url
        self.raw = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)))
        # sum()/avg() of integers are NUMERIC on PostgreSQL: give the code floats, as SQLite does.
        self.raw.adapters.register_loader("numeric", FloatLoader)
        self.conn = Connection(self)
        self._keys: dict[str, tuple[str, ...]] = {}
        self._streams = 0

    # -- the sqlite-utils Database surface ----------------------------------------------------------
    def execute(self, sql: str, params=()) -> Cursor:
        stripped = sql.strip().rstrip(";").upper()
        if stripped == "BEGIN IMMEDIATE":
            self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", [WRITER_LOCK])
            return Cursor(self.raw.cursor())
        cur = self.raw.cursor()
        cur.execute(translate(sql, isinstance(params, dict)), _params(params))
        return Cursor(cur)

    def executescript(self, script: str) -> None:
        self.raw.execute(script)

    def query(self, sql: str, params=()) -> Iterator[dict]:
        cur = self.raw.cursor()
        cur.execute(translate(sql, isinstance(params, dict)), _params(params))
        if cur.description is None:
            return
        names = [d.name for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))

    def stream(self, sql: str, params=(), batch: int = 2000) -> Iterator[dict]:
        """The rows of a large SELECT through a server-side cursor, ``batch`` at a time: the client holds one batch,
        where ``query`` (psycopg's ordinary cursor) receives the whole result first (an export of a million
        sightings). WITH HOLD keeps the cursor outside a transaction, so other statements may run on this
        connection between rows, as the exports' lookups do."""
        self._streams += 1
        with self.raw.cursor(name=f"herdbook_stream_{self._streams}", withhold=True) as cur:
            cur.itersize = batch
            cur.execute(translate(sql, isinstance(params, dict)), _params(params))
            names = [d.name for d in cur.description]
            for row in cur:
                yield dict(zip(names, row, strict=True))

    def table_names(self) -> list[str]:
        rows = self.raw.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).fetchall()
        return [r[0] for r in rows]

    def __getitem__(self, name: str) -> PostgresTable:
        return PostgresTable(self, name)

    def reset_identities(self) -> None:
        """After rows were written with explicit ids (a bulk load), move each id sequence past the largest id."""
        for (table,) in self.raw.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'id' AND is_identity = 'YES'"
        ).fetchall():
            largest = f'GREATEST((SELECT max(id) FROM "{table}"), 1)'
            self.raw.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {largest})")

    def enable_wal(self) -> None:  # PostgreSQL has its own write-ahead log
        pass

    def close(self) -> None:
        self.raw.close()

    def primary_key(self, table: str) -> tuple[str, ...]:
        if table not in self._keys:
            rows = self.raw.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)",
                [table],
            ).fetchall()
            self._keys[table] = tuple(r[0] for r in rows)
        return self._keys[table]


@dataclass
class _Inserted:
    last_pk: object


class PostgresTable:
    """The sqlite-utils Table calls the code makes."""

    def __init__(self, db: PostgresDatabase, name: str):
        self.db, self.name = db, name

    def create(self, columns: dict, pk="id", not_null=(), foreign_keys=(), defaults=None) -> None:
        defaults = defaults or {}
        keys = (pk,) if isinstance(pk, str) else tuple(pk)
        parts = []
        for col, kind in columns.items():
            if keys == (col,) and kind is int:
                parts.append(f'"{col}" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY')
                continue
            spec = f'"{col}" {_TYPES[kind]}'
            if col in not_null:
                spec += " NOT NULL"
            if col in defaults:
                spec += f" DEFAULT {defaults[col]!r}"
            parts.append(spec)
        if not (len(keys) == 1 and columns.get(keys[0]) is int):
            parts.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in keys) + ")")
            # Every SQLite table has a rowid, which the pipeline uses as "rows added since".
            parts.append("rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE")
        for col, other, other_col in foreign_keys:
            parts.append(f'FOREIGN KEY ("{col}") REFERENCES "{other}" ("{other_col}")')
        self.db.raw.execute(f'CREATE TABLE "{self.name}" ({", ".join(parts)})')

    def create_index(self, columns: list[str], unique: bool = False) -> None:
        name = f"idx_{self.name}_{'_'.join(columns)}"
        cols = ", ".join(f'"{c}"' for c in columns)
        self.db.raw.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX "{name}" ON "{self.name}" ({cols})')

    @property
    def count(self) -> int:
        return self.db.raw.execute(f'SELECT count(*) FROM "{self.name}"').fetchone()[0]

    def columns_dict(self) -> dict[str, str]:
        rows = self.db.raw.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            [self.name],
        ).fetchall()
        return dict(rows)

    def get(self, pk) -> dict:
        keys = self.db.primary_key(self.name)
        values = pk if isinstance(pk, (tuple, list)) else (pk,)
        where = " AND ".join(f'"{k}" = %s' for k in keys)
        cur = self.db.raw.execute(f'SELECT * FROM "{self.name}" WHERE {where}', list(values))
        row = cur.fetchone()
        if row is None:
            from sqlite_utils.db import NotFoundError

            raise NotFoundError(f"{self.name}: no row {pk!r}")
        return {d.name: v for d, v in zip(cur.description, row, strict=True) if d.name != "rowid"}

    def _insert_sql(self, cols: list[str]) -> str:
        names = ", ".join(f'"{c}"' for c in cols)
        return f'INSERT INTO "{self.name}" ({names}) VALUES ({", ".join(["%s"] * len(cols))})'

    def insert(self, row: dict, ignore: bool = False, replace: bool = False, pk=None) -> _Inserted:
        cols = list(row)
        sql = self._insert_sql(cols)
        keys = self.db.primary_key(self.name)
        if ignore:
            sql += " ON CONFLICT DO NOTHING"
        elif replace:
            sql += self._on_conflict_update(keys, cols)
        has_id = keys == ("id",)
        if has_id:
            sql += ' RETURNING "id"'
        cur = self.db.raw.execute(sql, [row[c] for c in cols])
        got = cur.fetchone() if has_id else None
        return _Inserted(got[0] if got else None)

    def upsert(self, row: dict, pk) -> _Inserted:
        keys = (pk,) if isinstance(pk, str) else tuple(pk)
        cols = list(row)
        sql = self._insert_sql(cols) + self._on_conflict_update(keys, cols)
        self.db.raw.execute(sql, [row[c] for c in cols])
        return _Inserted(row.get(keys[0]) if len(keys) == 1 else None)

    def update(self, pk, fields: dict) -> PostgresTable:
        if fields:
            keys = self.db.primary_key(self.name)
            values = pk if isinstance(pk, (tuple, list)) else (pk,)
            sets = ", ".join(f'"{c}" = %s' for c in fields)
            where = " AND ".join(f'"{k}" = %s' for k in keys)
            self.db.raw.execute(f'UPDATE "{self.name}" SET {sets} WHERE {where}', [*fields.values(), *values])
        return self

    @staticmethod
    def _on_conflict_update(keys: tuple[str, ...], cols: list[str]) -> str:
        target = ", ".join(f'"{k}"' for k in keys)
        sets = [f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in keys]
        return f" ON CONFLICT ({target}) " + ("DO UPDATE SET " + ", ".join(sets) if sets else "DO NOTHING")
