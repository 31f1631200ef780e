"""A throwaway PostgreSQL server for tests and benchmarks: a real ``postgres`` in a temporary folder.

The cluster lives in a fresh directory, listens on 127.0.0.1 on a free port, trusts local
connections and is removed on :meth:`PostgresServer.stop`. It needs the server binaries
(``initdb``, ``pg_ctl``): Debian's ``postgresql`` package (``make postgres``; ``.ci/run`` installs
it on a clean machine). They are looked up on PATH, then under ``/usr/lib/postgresql/*/bin``.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster is owned by, and every
server command runs as, an unprivileged account (``nobody`` unless ``HA_PG_USER`` names another).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

_START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the cluster could not start; the message says which."""


def find_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: PATH first, then the newest Debian cluster version."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    return Path(versions[0]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One running cluster. ``dsn()`` is the superuser's connection string for a database."""

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = _free_port()
        self._run_as = run_as

    @classmethod
    def start_new(cls) -> PostgresServer:
        """initdb + start. Raises :class:`PostgresUnavailable` with the reason when it cannot."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
                "/usr/lib/postgresql/*/bin; install Debian's postgresql package (make postgres)"
            )
        run_as = os.environ.get("HA_PG_USER", "nobody") if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="ha-pg-"))
        if run_as is not None:
            shutil.chown(root, user=run_as)
        server = cls(bin_dir, root, run_as)
        try:
            server._command(
                "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
            )
            server.start()
        except (OSError, subprocess.CalledProcessError, PostgresUnavailable) as exc:
            log = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
            server.remove()
            detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise PostgresUnavailable(f"PostgreSQL did not start: {detail}\n{log}") from exc
        return server

    def _command(self, tool: str, *args: str) -> None:
        # The account switch is setpriv's job, not subprocess's ``user=``: with ``user=`` Python
        # must fork() the whole test process, and a fork() of a process with live gRPC threads
        # runs gRPC's at-fork handlers in the child, which CI saw die with SIGBUS before exec.
        # Without ``user=`` Python uses vfork(), which runs no handlers and copies nothing.
        prefix: list[str] = []
        if self._run_as is not None:
            prefix = [
                _setpriv(),
                f"--reuid={self._run_as}",
                f"--regid={_primary_group(self._run_as)}",
                "--clear-groups",
                "--",
            ]
        subprocess.run(
            [*prefix, str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            cwd=self.root,
        )

    def start(self) -> None:
        """Start (again) on the same port and data; returns once it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=200"
        self._command("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server ("fast": roll back open transactions; "immediate": like a crash)."""
        self._command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "ha") -> str:
        """A new empty database; returns its DSN (tests each take their own)."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """Stop if running and delete the cluster's folder."""
        with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _setpriv() -> str:
    found = shutil.which("setpriv")
    if found is None:
        raise PostgresUnavailable("setpriv (util-linux) is needed to run PostgreSQL as an unprivileged user")
    return found


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid
