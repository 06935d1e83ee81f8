"""Run one command and write its wall time, CPU time and peak RSS to a JSON file.

    python -I -S bench/launch.py RESULT.json TIMEOUT_S COMMAND [ARG...]

Why a separate, small process starts the command: Linux carries the memory high-water mark of
the process that spawns a program into that program's peak RSS (wait4()'s ru_maxrss; exec()
records the spawner's address space, and fork() or vfork() share or copy it). A client started
straight from a benchmark that holds 100 MiB reports at least 100 MiB, whatever it used itself.
This launcher imports almost nothing, so the command's figure is its own, above a floor of
this interpreter's few MiB, which the result names ("floor_rss_mib").

The command's stdout and stderr are the launcher's. The launcher exits with the command's exit
status (128 + N for a signal N), or 124 after killing a command that outlived TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

#: Exit status when the command ran past its time limit (timeout(1)'s).
TIMED_OUT_STATUS = 124


def run_launched(argv: list[str], timeout_s: float, **run_options: Any) -> tuple[Any, dict[str, Any]]:
    """For the benchmarks: run `argv` through this launcher (`subprocess.run` with
    `run_options`); its CompletedProcess and the usage written for it. Imports stay in here, so
    the launcher itself loads no more than it needs."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        usage_path = Path(scratch) / "usage.json"
        launcher = [sys.executable, "-I", "-S", __file__, str(usage_path), str(timeout_s)]
        done = subprocess.run([*launcher, *argv], check=False, **run_options)
        usage = json.loads(usage_path.read_text()) if usage_path.exists() else {}
    return done, usage


def own_peak_kib() -> int:
    """This process's memory high-water mark since its exec (VmHWM; its rusage would count its
    own spawner's memory too): what a command it spawns starts from."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    result_path, timeout_s, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    floor_kib = own_peak_kib()
    started = time.monotonic()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    timed_out = False

    def kill(_signum: int, _frame: object) -> None:
        nonlocal timed_out
        timed_out = True
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, kill)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    _, status, usage = os.wait4(pid, 0)  # retried by Python after the alarm's handler runs
    signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.monotonic() - started
    code = TIMED_OUT_STATUS if timed_out else os.waitstatus_to_exitcode(status)
    result = {
        "seconds": elapsed,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "floor_rss_mib": floor_kib / 1024,
        "exit_code": code,
        "timed_out": timed_out,
    }
    with open(result_path, "w") as f:
        json.dump(result, f)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
