"""A real PostgreSQL server for the test suite: initdb in a temporary folder, listening only on a Unix socket
there, stopped at the end of the session. Debian's ``postgresql`` package provides the binaries (.ci/run
installs it); the server refuses to run as root, so as root it runs as the ``postgres`` user."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def find_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self, binaries: Path):
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="herdbook-pg-"))
        self.data = self.root / "data"
        self.socket = self.root
        self.port = 5432 + os.getpid() % 1000
        self._names = itertools.count(1)
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o755)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "herdbook", "-E", "UTF8", "--no-sync")
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-k {self.socket} -p {self.port} -c listen_addresses='' -c fsync=off -c max_connections=200",
            "start",
        )

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, text=True)

    def log_text(self) -> str:
        """The server's log so far (benches read slow statements from it)."""
        return (self.root / "log").read_text(errors="replace")

    def url(self, dbname: str) -> str:
        return f"postgresql://herdbook@/{dbname}?host={self.socket}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database on the server; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def copy_database(self, url: str) -> str:
        """A new database with the contents of ``url``'s (which must have no open connection)."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        source = conninfo_to_dict(url)["dbname"]
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
