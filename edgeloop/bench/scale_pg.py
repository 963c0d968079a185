"""A throwaway PostgreSQL server for `bench scale`'s hub part (Debian's postgresql package: initdb and
postgres from /usr/lib/postgresql/*/bin), as tests/hubdb.py starts one for the tests, but durable
(fsync on): the bench measures what a deployment would pay for a commit."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

from edgeloop.broker import free_port


class Postgres:
    def __init__(self):
        bins = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if not bins:
            raise RuntimeError("no PostgreSQL server: apt-get install postgresql")
        self.bin = Path(bins[-1]).parent
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses root
        self.root = Path(tempfile.mkdtemp(prefix="edgeloop-bench-pg-"))
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _run(self, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(argv, user=self.user, cwd=self.root,
                                group=self.user and pwd.getpwnam(self.user).pw_gid,
                                extra_groups=[] if self.user else None, **kw)

    def start(self, timeout: float = 60) -> Postgres:
        import psycopg

        init = self._run([str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust",
                          "--no-locale", "-E", "UTF8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = init.communicate(timeout=120)[0]
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{out.decode(errors='replace')}")
        log = open(self.root / "postgres.log", "ab")
        self.proc = self._run([str(self.bin / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
                               "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                              stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=5):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("postgres did not start: " + (self.root / "postgres.log").read_text()[-2000:])
                time.sleep(0.1)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
