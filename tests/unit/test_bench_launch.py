"""bench/launch.py: a client's peak RSS is its own, not that of the process that started it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "bench_launch", Path(__file__).resolve().parents[2] / "bench" / "launch.py"
)
assert _SPEC is not None and _SPEC.loader is not None
_LAUNCH = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_LAUNCH)
MIB = 1024**2
#: What the spawning process holds while it starts the launcher: far above any small client.
PARENT_HOLDS_BYTES = 300 * MIB
#: What the measured client allocates and touches itself.
CLIENT_HOLDS_MIB = 64


def launched(timeout_s: float, *argv: str) -> tuple[int, dict[str, float]]:
    done, usage = _LAUNCH.run_launched(list(argv), timeout_s)
    return done.returncode, usage


def test_a_client_reports_its_own_peak_not_its_spawners(tmp_path: Path) -> None:
    held = bytearray(PARENT_HOLDS_BYTES)
    held[::4096] = b"\x01" * len(range(0, PARENT_HOLDS_BYTES, 4096))  # resident, not just mapped
    touch = f"b = bytearray({CLIENT_HOLDS_MIB} * 1024 * 1024); b[::4096] = b'1' * len(b[::4096])"
    code, usage = launched(60, sys.executable, "-c", touch)
    assert code == 0
    assert CLIENT_HOLDS_MIB <= usage["peak_rss_mib"] < PARENT_HOLDS_BYTES / MIB / 2
    assert usage["floor_rss_mib"] < usage["peak_rss_mib"]
    assert usage["user_seconds"] + usage["system_seconds"] > 0
    del held


def test_the_clients_exit_status_is_the_launchers(tmp_path: Path) -> None:
    code, usage = launched(60, sys.executable, "-c", "raise SystemExit(3)")
    assert (code, usage["exit_code"], usage["timed_out"]) == (3, 3, False)


def test_a_client_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    code, usage = launched(0.5, sys.executable, "-c", "import time; time.sleep(30)")
    assert (code, usage["timed_out"]) == (124, True)
    assert usage["seconds"] < 10
