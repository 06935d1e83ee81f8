"""Long-lived objects kept out of the cyclic garbage collector's full passes.

A process that runs jobs imports botocore, the operations and their libraries:
hundreds of thousands of objects that live as long as the process. Every full (oldest
generation) collection walks all of them again, and a job allocates enough to trigger one
every few thousand tasks: `perf` put about 6 % of a 5,000-object transfer's CPU, and 5 % of a
2 GiB one's, in those walks. `gc.freeze()` moves every object alive at that moment into a
generation the collector never walks.

Only the processes s3batch starts do this (its command line, its workers, the process engine's
workers and the Ray engine's actors opt in with `enable()`): a program that embeds s3batch as a
library keeps its collector as it set it. The freeze happens once per process, when its first
operation has been built (by then the modules a job needs are imported; aiobotocore, loaded with
the S3 adapter's fallback client on its first use, may come later and stays unfrozen). Garbage
cycles alive at that moment are never collected, so freezing again at every job of a long-lived
worker would leak a little each time; once, it is a bounded one-off.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_enabled = False
_frozen = False


def enable() -> None:
    """Let `freeze_once` freeze this process's heap (for the processes s3batch starts)."""
    global _enabled
    _enabled = True


def freeze_once() -> bool:
    """Freeze the objects alive now, if enabled and not done before; whether it froze."""
    global _frozen
    with _lock:
        if not _enabled or _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
