"""A PostgreSQL server of the tests' own: ``initdb`` into a temporary folder, ``pg_ctl start``
on a free port of 127.0.0.1 only, a database per test, everything removed at the end.

Debian's ``postgresql`` package (which ``make test`` installs) puts the binaries in
``/usr/lib/postgresql/<version>/bin``, off the PATH. PostgreSQL refuses to run as root, so
when the tests run as root the server runs as the ``postgres`` system user (``nobody`` when
there is none), through ``runuser``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from launcher.processes import free_port

NOT_INSTALLED = "PostgreSQL is not installed: make test installs it (apt-get install postgresql)"
NO_DRIVER = ("psycopg is not installed: make test installs it (pip install -e '.[postgres]', "
             "the postgres extra)")
SUPERUSER = "lab"
# The run store's two kinds, for tests that run over both (``@pytest.fixture(params=STORES)``):
# the PostgreSQL one starts a server (the ``postgres_url`` fixture), so it is a stack test
# wherever it lives.
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.stack)]


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest Debian version, else the PATH."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(bindir) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(bindir)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if find_bindir() is None:
        return NOT_INSTALLED
    if importlib.util.find_spec("psycopg") is None:
        return NO_DRIVER
    return None


def _server_user() -> str | None:
    """The system user to run the server as (None: this one, which is not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no postgres or nobody user to run "
                       "PostgreSQL as (it refuses to run as root)")


class PostgresServer:
    """One throwaway server. ``start()``, then ``create_database()`` as often as needed."""

    def __init__(self, bindir: Path | None = None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError(NOT_INSTALLED)
        self.user = _server_user()
        self.password = secrets.token_hex(12)
        self.root: Path | None = None
        self.port = 0
        self.url = ""  # the database "lab", made at start
        self._count = 0

    # -- processes ----------------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # A folder the server user may enter, whatever folder the tests run in.
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "LC_ALL": "C"})
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}{self.log_text()[-3000:]}")
        return done

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def start(self, attempts: int = 3) -> PostgresServer:
        # Not under pytest's tmp_path: its folders are private to root, and the server user
        # must reach its data folder.
        self.root = Path(tempfile.mkdtemp(prefix="lab-pg-"))
        try:
            self.root.chmod(0o700)
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(self.root, entry.pw_uid, entry.pw_gid)
            (self.root / "sockets").mkdir()
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self.user is not None:
                shutil.chown(self.root / "sockets", self.user)
                shutil.chown(pwfile, self.user)
            # Password auth over TCP; the unix socket lives in the private folder only.
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8",
                      "--locale=C", "--no-sync", "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
            pwfile.unlink()
            for attempt in range(1, attempts + 1):
                self.port = free_port()
                options = " ".join([
                    "-c listen_addresses=127.0.0.1", f"-p {self.port}",
                    f"-k {self.root / 'sockets'}",
                    # A test server: durability is not wanted, speed is.
                    "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                    "-c max_connections=300",
                ])
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                              "-w", "-t", "60", "-o", options, "start")
                    break
                except RuntimeError:
                    if attempt == attempts:  # the port was taken meanwhile, or worse
                        raise
                    time.sleep(0.5)
            self.url = self.create_database("lab")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60",
                          "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- databases ----------------------------------------------------------------------

    def database_url(self, name: str) -> str:
        return (f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/"
                f"{name}")

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                             password=self.password, dbname="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its SQLAlchemy URL."""
        if name is None:
            self._count += 1
            name = f"test_{self._count}_{secrets.token_hex(3)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url_or_name: str) -> None:
        """Drop a database, closing whatever connections to it are left."""
        name = url_or_name.rsplit("/", 1)[-1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
