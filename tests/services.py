"""Real services the slow tests start and stop: an `mlflow server` on a loopback port, and a
throwaway PostgreSQL cluster (initdb in a temp dir, loopback only, trust auth, its own port)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port with `backend_uri` as its store; yields its URL
    once /health answers (migrating a fresh database takes a while), stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", backend_uri]
    command += ["--artifacts-destination", str(artifacts), "--workers", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail("mlflow server exited: " + log.read_text()[-2000:])
        else:
            pytest.fail("mlflow server did not come up in 180 s: " + log.read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def require_postgres() -> Path:
    """PostgreSQL's programs, or a skip; `HYPERSWEEP_REQUIRE_POSTGRES=1` (CI) makes it a failure."""
    bindir = postgres_bin()
    if bindir is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if os.environ.get("HYPERSWEEP_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


@contextlib.contextmanager
def postgres_cluster(databases: list[str]) -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with `databases` created; yields the base URL
    (`postgresql+psycopg://hs@127.0.0.1:PORT`, append `/NAME`). PostgreSQL refuses to run as
    root, so as root the cluster belongs to the `postgres` user the Debian package creates."""
    bindir = require_postgres()
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="hs-pg-"))  # under /tmp: reachable by that user
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres", "postgres")
    cluster, log, port = data / "cluster", data / "server.log", free_port()

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"{command[0]} failed: {(result.stdout + result.stderr)[-2000:]}")

    run(str(bindir / "initdb"), "-D", str(cluster), "-U", "hs", "-A", "trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(cluster), "-l", str(log), "-o", options, "-w", "start")
    try:
        for name in databases:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "hs", name)
        yield f"postgresql+psycopg://hs@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)
