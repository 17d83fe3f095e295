"""An environment's log: its agent's stdout and stderr, ``STATE_DIR/logs/env-N.log``
(side effects: the file).  The agent writes AWS's lines (``START``, ``END``, ``REPORT``,
``INIT_REPORT``, ``EXTENSION``) between what the handler prints, and reads back what one
invocation logged for ``LogType: Tail``."""

from __future__ import annotations

import os
import resource
import sys


def write(text: str) -> None:
    sys.stdout.flush()
    os.write(1, text.encode())


def size() -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return os.fstat(1).st_size
    except OSError:
        return 0


def since(offset: int) -> str:
    """What this environment logged since ``offset`` (its stdout is its log file)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with open("/proc/self/fd/1", "rb") as fh:
            fh.seek(offset)
            return fh.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def max_rss_mb() -> int:
    return max(1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
