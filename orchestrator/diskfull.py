"""Recognising a full disk behind the many ways it surfaces, so it is reported in one line that says so.

A full disk shows up as `OSError(ENOSPC)` (or EDQUOT, a full quota), as torch's
`[enforce fail at inline_container.cc:...] . unexpected pos N vs M` or `... file write failed` when a
checkpoint write comes up short, and as SQLite's `database or disk is full`. A run that fails for a
full disk is not retried on the same disk: the worker reports it as failed (`run_trial`) and the next
`ect study resume`, once there is space, continues it from its last good checkpoint (checkpoint
writes are atomic, so a short write leaves the previous checkpoint intact).
"""

from __future__ import annotations

import errno
import re

SIGNS = ("no space left on device", "unexpected pos", "file write failed", "database or disk is full",
         "disk quota exceeded", "disk full: no space left")  # the last: our own line, inside a wrapper


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, reports a full disk or quota."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(cur).lower() for sign in SIGNS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def disk_full_message(path: object) -> str:
    """The one line stored and printed for a full disk under `path`."""
    return f"disk full: no space left on the device holding {path}; free space and run again (runs resume from their last checkpoint)"


def describe(exc: BaseException) -> str:
    """The one line for a full-disk exception: our own line where one is inside it (a store error that
    Ray Tune wrapped with its traceback), else `disk_full_message` of the path it names (an OSError's
    file name, or the first line: our checkpoint and store errors start with the path)."""
    text = str(exc).strip()
    ours = re.search(r"disk full: no space left on the device holding [^\n]*", text)
    if ours:
        return ours.group(0)
    if isinstance(exc, OSError) and exc.filename:
        return disk_full_message(exc.filename)
    return disk_full_message(text.splitlines()[0][:300] if text else type(exc).__name__)
