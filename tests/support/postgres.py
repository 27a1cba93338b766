"""Throwaway PostgreSQL clusters for the tests (and benchmarks): Debian's PostgreSQL 15 binaries,
`initdb` into a temporary directory, the server started as the postgres user (it refuses to run
as root) on an address of the test's, optionally inside a network namespace, stopped by its pid
and removed with its directory.

    cluster = Cluster(port=free_port()); cluster.start()
    dsn = cluster.create_database("t1")     # postgresql://jitnet:...@127.0.0.1:PORT/t1
    cluster.stop(); cluster.remove()

The `postgres_cluster` fixture is one such cluster on 127.0.0.1 for the whole session, and
`postgres_dsn` a fresh database in it per test, dropped afterwards (both registered by
tests/conftest.py).
"""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

USER = "jitnet"  # the role the servers connect as (a superuser of the throwaway cluster)
START_TIMEOUT = 30.0


def binaries() -> pathlib.Path | None:
    """The bin directory of PostgreSQL 15 (or the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: (not p.startswith("/usr/lib/postgresql/15/"), p))
    return pathlib.Path(found[0]).parent if found else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server on `host`:`port`, its data in a fresh temporary directory.

    `netns`: the network namespace to run it in (`ip netns exec`). `durable`: fsync on (the
    benchmarks' setting; tests turn it off, it only slows them)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *,
                 netns: str | None = None, durable: bool = False):
        self.bin = binaries()
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed (apt-get install -y --no-install-recommends "
                        "postgresql; scripts/test does it)")
        self.host = host
        self.port = port or free_port(host if netns is None else "127.0.0.1")
        self.netns = netns
        self.durable = durable
        self.password = secrets.token_hex(8)
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="jitnet-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        try:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._as_postgres:
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                       f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                       "-E", "UTF8", "--no-sync", "--no-instructions"])
            pwfile.unlink()
            with open(self.data / "pg_hba.conf", "a") as hba:  # the test hosts' addresses too
                hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _user_prefix(self) -> list[str]:
        # setpriv execs (no fork), so the pid we hold is the server's own.
        if not self._as_postgres:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._user_prefix() + argv, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> Cluster:
        settings = {"listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": str(self.root), "max_connections": "200",
                    "fsync": "on" if self.durable else "off",
                    "synchronous_commit": "on" if self.durable else "off",
                    "full_page_writes": "on" if self.durable else "off",
                    "log_min_messages": "warning"}
        argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(prefix + self._user_prefix() + argv,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log_text}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.root),
                                    "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready after {START_TIMEOUT} s:\n{self.log_text}")

    @property
    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster, by pid): clients are disconnected."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", host: str | None = None,
            port: int | None = None) -> str:
        return (f"postgresql://{USER}:{self.password}@{host or self.host}:{port or self.port}/"
                f"{dbname}")

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Over the cluster's unix socket: works from outside its network namespace."""
        return f"host={self.root} port={self.port} user={USER} dbname={dbname}"

    def sql(self, statement: str, params=(), dbname: str = "postgres"):
        """Runs one statement as the superuser (autocommit); returns its rows, if any."""
        import psycopg

        with psycopg.connect(self.admin_dsn(dbname), autocommit=True) as conn:
            cursor = conn.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else None

    def create_database(self, name: str | None = None) -> str:
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.sql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dbname_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def postgres_dsn(postgres_cluster):
    """A fresh, empty database for one test (dropped afterwards, its connections cut)."""
    dsn = postgres_cluster.create_database()
    yield dsn
    postgres_cluster.drop_database(dbname_of(dsn))
