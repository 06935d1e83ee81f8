"""bench/launch.py: a client's peak RSS is its own, not that of the process that started it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[2] / "bench" / "launch.py"
MIB = 1024**2
#: What the spawning process holds while it starts the launcher: far above any small client.
PARENT_HOLDS_BYTES = 300 * MIB
#: What the measured client allocates and touches itself.
CLIENT_HOLDS_MIB = 64


def launched(tmp_path: Path, timeout_s: float, *argv: str) -> tuple[int, dict[str, float]]:
    result = tmp_path / "usage.json"
    code = subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), str(result), str(timeout_s), *argv], check=False
    ).returncode
    return code, json.loads(result.read_text())


def test_a_client_reports_its_own_peak_not_its_spawners(tmp_path: Path) -> None:
    held = bytearray(PARENT_HOLDS_BYTES)
    held[::4096] = b"\x01" * len(range(0, PARENT_HOLDS_BYTES, 4096))  # resident, not just mapped
    touch = f"b = bytearray({CLIENT_HOLDS_MIB} * 1024 * 1024); b[::4096] = b'1' * len(b[::4096])"
    code, usage = launched(tmp_path, 60, sys.executable, "-c", touch)
    assert code == 0
    assert CLIENT_HOLDS_MIB <= usage["peak_rss_mib"] < PARENT_HOLDS_BYTES / MIB / 2
    assert usage["floor_rss_mib"] < usage["peak_rss_mib"]
    assert usage["user_seconds"] + usage["system_seconds"] > 0
    del held


def test_the_clients_exit_status_is_the_launchers(tmp_path: Path) -> None:
    code, usage = launched(tmp_path, 60, sys.executable, "-c", "raise SystemExit(3)")
    assert (code, usage["exit_code"], usage["timed_out"]) == (3, 3, False)


def test_a_client_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    code, usage = launched(tmp_path, 0.5, sys.executable, "-c", "import time; time.sleep(30)")
    assert (code, usage["timed_out"]) == (124, True)
    assert usage["seconds"] < 10
