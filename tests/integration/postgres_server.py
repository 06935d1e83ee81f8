"""A throwaway PostgreSQL server for tests: Debian's binaries (scripts/install-postgres),
initdb into a temporary folder, listening on 127.0.0.1 and a unix socket in that folder only.

initdb refuses to run as root, so under root the server runs as `nobody` (runuser), owning
its folder. Trust authentication: nothing but this machine's loopback can reach it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

#: Seconds pg_ctl waits for the server to start or stop.
PG_CTL_WAIT_S = 60
#: Superuser created by initdb.
SUPERUSER = "postgres"
#: Unprivileged account the server runs as when the tests run as root.
ROOT_FALLBACK_USER = "nobody"


def bin_dir() -> Path:
    """The newest installed /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install-postgres")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", ROOT_FALLBACK_USER, "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=PG_CTL_WAIT_S + 10)

    @classmethod
    def start(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="s3batch-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, ROOT_FALLBACK_USER)
        server = cls(root=root, port=free_port(), bin=bin_dir())
        try:
            server._run(str(server.bin / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "-A", "trust",
                        "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
            options = f"-h 127.0.0.1 -p {server.port} -k {root} -c fsync=off -c full_page_writes=off"
            server._run(str(server.bin / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"),
                        "-o", options, "-w", "-t", str(PG_CTL_WAIT_S), "start")  # fmt: skip
        except subprocess.CalledProcessError as exc:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            server.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()}{log}") from None
        return server

    def stop(self) -> None:
        data = self.root / "data"
        try:
            if (data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        except subprocess.SubprocessError:
            self._kill(data)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill(data: Path) -> None:
        """pg_ctl failed to stop it: end the postmaster this fixture started, by its pid."""
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
